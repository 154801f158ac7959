//! Issue 9, observability: every stage process serves Prometheus `/metrics`
//! (`telemetry.metrics_addr`) whose counters equal what the stage committed, read back from
//! Kafka; `intake run` serves one endpoint with every stage; `intake status --json` shows the
//! figures of a live pipeline exactly.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intake::config::Config;
use intake::topics::TopicNames;
use support::*;

const SECRET: &str = "whsec-observability";

/// A child `intake` process, killed when dropped; its stderr goes to a file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// `intake run` with the config `text`, written (with the process's log) to a fresh
    /// directory: the directory (keep it while the process runs), the config's path and the
    /// process.
    fn run(text: &str) -> (tempfile::TempDir, PathBuf, Self) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), text);
        let run = Self::start(
            "run",
            &["run", "--config", path.to_str().unwrap()],
            dir.path(),
        );
        (dir, path, run)
    }

    fn start(name: &str, args: &[&str], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_intake"))
            .args(args)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited with {status}:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// SIGTERM, then wait for a graceful exit.
    fn stop(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} stopped with {status}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not stop within 60 s of SIGTERM", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Parsed Prometheus text: one sample per series.
#[derive(Debug, Default)]
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap();
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (n.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            out.push((name, labels, value.parse().unwrap()));
        }
        Self(out)
    }

    /// Sum of the series named `name` with all of `labels` (0 when there is none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.0.iter().any(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
    }

    fn stage(&self, name: &str, stage: &str) -> u64 {
        self.sum(name, &[("stage", stage)]) as u64
    }
}

async fn scrape(port: u16) -> Option<Scrape> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    Some(Scrape::parse(&r.text().await.ok()?))
}

/// Scrapes until the data stages are done with the backfill of `total` records (within 180 s).
async fn wait_for_backfill(port: u16, run: &mut Proc, total: u64) {
    scrape_until(
        port,
        &mut [run],
        Duration::from_secs(180),
        "the backfill",
        |s| data_stages_done(s, total),
    )
    .await;
}

/// Scrapes `port` until `done` holds for `settle` in a row (values unchanged), or panics after
/// `timeout`; every `procs` must stay alive meanwhile.
async fn scrape_until(
    port: u16,
    procs: &mut [&mut Proc],
    timeout: Duration,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + timeout;
    let mut stable_since: Option<(Instant, String)> = None;
    let mut last = None;
    loop {
        for p in procs.iter_mut() {
            p.assert_running();
        }
        let s = scrape(port).await;
        if let Some(s) = &s
            && done(s)
        {
            let mut totals: Vec<String> =
                s.0.iter()
                    .filter(|(n, _, _)| n.ends_with("_total"))
                    .map(|(n, l, v)| format!("{n}{l:?}={v}"))
                    .collect();
            totals.sort();
            let key = totals.join(",");
            match &stable_since {
                Some((at, k)) if *k == key && at.elapsed() >= Duration::from_secs(3) => {
                    return s.0.clone().into();
                }
                Some((_, k)) if *k == key => {}
                _ => stable_since = Some((Instant::now(), key)),
            }
        } else {
            stable_since = None;
        }
        if s.is_some() {
            last = s;
        }
        if Instant::now() >= deadline {
            let core: Vec<_> = last
                .map(|l| {
                    l.0.into_iter()
                        .filter(|(n, _, _)| {
                            n.starts_with("intake_records")
                                || n.starts_with("intake_lag")
                                || n.starts_with("intake_errors")
                        })
                        .collect()
                })
                .unwrap_or_default();
            let logs: Vec<String> = procs
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!(
                        "--- {} (last lines, newest first)\n{}",
                        p.name,
                        tail.join("\n")
                    )
                })
                .collect();
            panic!(
                "timed out waiting for {what}; last scrape: {core:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl From<Vec<(String, BTreeMap<String, String>, f64)>> for Scrape {
    fn from(v: Vec<(String, BTreeMap<String, String>, f64)>) -> Self {
        Self(v)
    }
}

fn pipeline_config(sim: &intake::sim::SimHandle, serve_port: u16, metrics_port: u16) -> String {
    let mut src = sim_source(
        sim,
        &[
            ("customers", "/v1/customers", "cursor"),
            ("orders", "/v1/orders", "link"),
        ],
        "poll_interval = \"1h\"",
    );
    // Webhooks for the same source.
    src = src.replacen(
        "max_retries = 20\n",
        &format!(
            "max_retries = 20\nquota = {{ requests = 200, per = \"1s\" }}\nwebhook = {{ secrets = [\"{SECRET}\"] }}\n"
        ),
        1,
    );
    config_text(&format!(
        r#"
[serve]
listen = "127.0.0.1:{serve_port}"
{client}

[telemetry]
metrics_addr = "127.0.0.1:{metrics_port}"

{src}
"#,
        client = serve_client()
    ))
}

/// Posts `n` signed customer webhooks (entity `w<i>`), each answered 202.
async fn post_webhooks(serve_port: u16, n: u64) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let body = serde_json::to_vec(&serde_json::json!({
            "event_id": format!("e{i}"), "type": "updated", "stream": "customers",
            "entity_id": format!("w{i}"), "seq": i + 1,
            "data": {"id": format!("w{i}"), "version": i + 1}
        }))
        .unwrap();
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = intake::signing::sign(SECRET.as_bytes(), t, &body);
        let r = client
            .post(format!("http://127.0.0.1:{serve_port}/v1/webhooks/sim"))
            .header("content-type", "application/json")
            .header("X-Intake-Signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    }
}

/// What the stages committed, counted from Kafka (read_committed).
#[derive(Debug)]
struct Committed {
    /// Records inside the landed pages (fetch's input).
    fetched_records: u64,
    /// Landing records written by fetch (pages, blob-refs, sync markers).
    landing_fetch: u64,
    /// Landing records written by serve (webhook events).
    landing_serve: u64,
    /// Cursor records.
    cursors: u64,
    /// Valid-topic records (all streams, markers included).
    valid: u64,
    /// DLQ records by stage.
    dlq_validate: u64,
    dlq_dedup: u64,
    /// Entries validate wrote to the dlq-index (one per dead letter and per repeat).
    dlq_index: u64,
    /// Curated records (emissions and tombstones).
    curated: u64,
    /// Curated tombstones.
    tombstones: u64,
}

async fn committed(cfg: &Config, streams: &[&str]) -> Committed {
    let names = TopicNames::from_config(cfg);
    let landing = read_all(&names.landing(), "read_committed");
    let fetched_records = landed_pages(cfg)
        .await
        .iter()
        .map(|p| p.records.len() as u64)
        .sum();
    let landing_serve = landing
        .iter()
        .filter(|r| r.header("intake.kind") == Some("event"))
        .count() as u64;
    let dlq = read_all(&names.dlq(), "read_committed");
    let mut c = Committed {
        fetched_records,
        landing_fetch: landing.len() as u64 - landing_serve,
        landing_serve,
        cursors: read_all(&names.cursors(), "read_committed").len() as u64,
        valid: 0,
        dlq_validate: dlq
            .iter()
            .filter(|r| r.header("dlq.stage") == Some("validate"))
            .count() as u64,
        dlq_dedup: dlq
            .iter()
            .filter(|r| r.header("dlq.stage") == Some("dedup"))
            .count() as u64,
        dlq_index: read_all(&names.dlq_index(), "read_committed").len() as u64,
        curated: 0,
        tombstones: 0,
    };
    assert_eq!(
        c.dlq_validate + c.dlq_dedup,
        dlq.len() as u64,
        "every DLQ record names its stage"
    );
    for s in streams {
        c.valid += read_all(&names.valid("sim", s), "read_committed").len() as u64;
        let curated = read_all(&names.curated("sim", s), "read_committed");
        c.curated += curated.len() as u64;
        c.tombstones += curated.iter().filter(|r| r.value.is_none()).count() as u64;
    }
    c
}

/// The core set of every stage equals what it committed.
fn assert_core_counts(m: &Scrape, c: &Committed, stages: &[&str]) {
    use intake::telemetry::metric::*;
    let expect: BTreeMap<&str, (u64, u64)> = [
        ("fetch", (c.fetched_records, c.landing_fetch + c.cursors)),
        (
            "validate",
            (
                c.landing_fetch + c.landing_serve,
                c.valid + c.dlq_validate + c.dlq_index,
            ),
        ),
        ("dedup", (c.valid, c.curated + c.dlq_dedup)),
        ("serve", (c.landing_serve, c.landing_serve)),
    ]
    .into_iter()
    .collect();
    for stage in stages {
        let (i, o) = expect[stage];
        assert_eq!(m.stage(RECORDS_IN, stage), i, "{stage}: records in ({c:?})");
        assert_eq!(
            m.stage(RECORDS_OUT, stage),
            o,
            "{stage}: records out ({c:?})"
        );
        assert!(
            m.sum(&format!("{COMMIT_SECONDS}_count"), &[("stage", stage)]) >= 1.0,
            "{stage}: commit latency recorded"
        );
        assert!(
            m.has(
                &format!("{COMMIT_SECONDS}_bucket"),
                &[("stage", stage), ("le", "0.1")]
            ),
            "{stage}: commit latency is a histogram"
        );
        assert!(m.has(LAG, &[("stage", stage)]), "{stage}: lag exported");
        assert_eq!(m.stage(LAG, stage), 0, "{stage}: nothing waiting once idle");
    }
    if stages.contains(&"dedup") {
        let emitted = m.sum(DEDUP_EMITTED, &[]) as u64;
        let tombstones = m.sum(DEDUP_TOMBSTONES, &[]) as u64;
        assert_eq!(emitted, c.curated, "dedup emitted = curated records");
        assert_eq!(tombstones, c.tombstones, "dedup tombstones");
        let stale = m.sum(DEDUP_STALE, &[]) as u64;
        let identical = m.sum(DEDUP_IDENTICAL, &[]) as u64;
        assert_eq!(
            stale + identical,
            0,
            "one version per key: nothing stale or identical"
        );
        assert!(m.has(DEDUP_STATE_KEYS, &[]), "state size exported");
    }
}

fn data_stages_done(s: &Scrape, fetch_records: u64) -> bool {
    use intake::telemetry::metric::*;
    s.stage(RECORDS_IN, "fetch") >= fetch_records
        && s.stage(RECORDS_IN, "validate") > 0
        && s.stage(RECORDS_IN, "dedup") > 0
        && ["validate", "dedup"]
            .iter()
            .all(|st| s.has(LAG, &[("stage", st)]) && s.stage(LAG, st) == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_run_serves_one_metrics_endpoint_whose_counters_equal_what_each_stage_committed() {
    const RECORDS: u64 = 150;
    const WEBHOOKS: u64 = 7;
    let sim = sim(&["--records", "150", "--drift-rate", "0.1"]).await;
    let (serve_port, metrics_port) = (free_port(), free_port());
    let text = pipeline_config(&sim, serve_port, metrics_port);
    let cfg = Config::from_toml(&text).unwrap();
    let (_dir, _, mut run) = Proc::run(&text);
    // Both streams backfilled, validated and deduplicated.
    let truth = truth(&sim).await;
    let total: u64 = ["customers", "orders"]
        .iter()
        .map(|s| truth["streams"][s]["live"].as_object().unwrap().len() as u64)
        .sum();
    assert_eq!(total, 2 * RECORDS);
    wait_for_backfill(metrics_port, &mut run, total).await;
    post_webhooks(serve_port, WEBHOOKS).await;
    let m = scrape_until(
        metrics_port,
        &mut [&mut run],
        Duration::from_secs(60),
        "the webhooks",
        |s| {
            use intake::telemetry::metric::*;
            s.stage(RECORDS_IN, "serve") == WEBHOOKS && data_stages_done(s, total)
        },
    )
    .await;
    let c = committed(&cfg, &["customers", "orders"]).await;
    assert_eq!(c.fetched_records, total, "every record fetched once");
    assert_eq!(c.landing_serve, WEBHOOKS);
    assert!(c.dlq_validate > 0, "drift reached the DLQ");
    assert_core_counts(&m, &c, &["fetch", "validate", "dedup", "serve"]);
    // serve's own /metrics shows the same registry.
    let on_serve = get_text(&format!("http://127.0.0.1:{serve_port}/metrics")).await;
    let on_serve = Scrape::parse(&on_serve);
    for stage in ["fetch", "validate", "dedup", "serve"] {
        assert_eq!(
            on_serve.stage(intake::telemetry::metric::RECORDS_IN, stage),
            m.stage(intake::telemetry::metric::RECORDS_IN, stage),
            "{stage} on serve's /metrics"
        );
    }
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stage_command_serves_its_own_metrics() {
    const RECORDS: u64 = 120;
    let sim = sim(&["--records", "120", "--drift-rate", "0.1"]).await;
    let serve_port = free_port();
    let base = pipeline_config(&sim, serve_port, 0);
    let cfg = Config::from_toml(&base).unwrap();
    apply_topics(&cfg).await;
    let reg = intake::registry::Registry::new(&cfg.registry).unwrap();
    intake::registry::apply_schemas(&cfg, &reg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ports = BTreeMap::new();
    let mut procs = Vec::new();
    for stage in ["fetch", "validate", "dedup", "serve"] {
        let port = free_port();
        ports.insert(stage, port);
        let text = base.replace(
            "metrics_addr = \"127.0.0.1:0\"",
            &format!("metrics_addr = \"127.0.0.1:{port}\""),
        );
        let sub = dir.path().join(stage);
        std::fs::create_dir_all(&sub).unwrap();
        let path = write_config(&sub, &text);
        procs.push(Proc::start(
            stage,
            &[stage, "--config", path.to_str().unwrap()],
            dir.path(),
        ));
    }
    let [fetch, validate, dedup, serve] = &mut procs[..] else {
        unreachable!()
    };
    use intake::telemetry::metric::*;
    scrape_until(
        ports["fetch"],
        &mut [&mut *fetch],
        Duration::from_secs(120),
        "fetch",
        |s| s.stage(RECORDS_IN, "fetch") >= 2 * RECORDS,
    )
    .await;
    // serve is ready once its own endpoint answers; then land a few webhooks.
    scrape_until(
        ports["serve"],
        &mut [&mut *serve],
        Duration::from_secs(60),
        "serve",
        |_| true,
    )
    .await;
    wait_ready(
        &format!("http://127.0.0.1:{serve_port}"),
        300,
        Duration::from_millis(100),
    )
    .await;
    post_webhooks(serve_port, 3).await;
    let mut scrapes = BTreeMap::new();
    for (stage, p) in [("validate", &mut *validate), ("dedup", &mut *dedup)] {
        let s = scrape_until(
            ports[stage],
            &mut [p],
            Duration::from_secs(120),
            stage,
            |s| {
                s.stage(RECORDS_IN, stage) > 0
                    && s.has(LAG, &[("stage", stage)])
                    && s.stage(LAG, stage) == 0
            },
        )
        .await;
        scrapes.insert(stage, s);
    }
    // Validate took in every landing record before dedup settled; scrape everything again.
    for stage in ["fetch", "validate", "dedup", "serve"] {
        scrapes.insert(stage, scrape(ports[stage]).await.unwrap());
    }
    let c = committed(&cfg, &["customers", "orders"]).await;
    assert_eq!(c.fetched_records, 2 * RECORDS);
    assert_eq!(c.landing_serve, 3);
    for stage in ["fetch", "validate", "dedup", "serve"] {
        let s = &scrapes[stage];
        assert_core_counts(s, &c, &[stage]);
        // A stage process shows its own stage only.
        for other in ["fetch", "validate", "dedup", "serve"] {
            if other != stage {
                assert_eq!(
                    s.stage(RECORDS_IN, other),
                    0,
                    "{stage} process shows {other}"
                );
            }
        }
    }
    for p in procs {
        p.stop();
    }
}

fn customer(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "name": "Ada", "email": "ada@example.com", "status": "active",
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z", "version": 1})
}

async fn submit_job(serve_port: u16, id: &str, records: &[serde_json::Value]) {
    let r = serve_http()
        .post(format!(
            "http://127.0.0.1:{serve_port}/v1/jobs?source=sim&stream=customers"
        ))
        .header("Idempotency-Key", id)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&serde_json::json!({ "data": records })).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
}

/// `intake status --json` as a person would run it.
fn status_json(path: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .args(["status", "--json", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "intake status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_status_json_shows_every_figure_of_a_live_pipeline_exactly() {
    const RECORDS: u64 = 100;
    let sim = sim(&[
        "--records",
        "100",
        "--drift-rate",
        "0.1",
        "--token",
        "demo=200",
    ])
    .await;
    let (serve_port, metrics_port) = (free_port(), free_port());
    let text = pipeline_config(&sim, serve_port, metrics_port);
    let (_dir, path, mut run) = Proc::run(&text);
    let total = 2 * RECORDS;
    wait_for_backfill(metrics_port, &mut run, total).await;
    // Two jobs: 3 valid customers and one with a number for an email; 2 valid ones.
    let mut a: Vec<_> = (1..=3).map(|i| customer(&format!("job-a-{i}"))).collect();
    let mut bad = customer("job-a-4");
    bad["email"] = serde_json::json!(42);
    a.push(bad);
    submit_job(serve_port, "job-a", &a).await;
    submit_job(
        serve_port,
        "job-b",
        &[customer("job-b-1"), customer("job-b-2")],
    )
    .await;

    // Poll status until both jobs are validated and nothing lags.
    let deadline = Instant::now() + Duration::from_secs(120);
    let s = loop {
        run.assert_running();
        let s = status_json(&path);
        let settled = s["jobs"]["by_state"] == serde_json::json!({"validated": 2})
            && s["lag"].as_array().unwrap().iter().all(|g| g["lag"] == 0);
        if settled {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not settle: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Streams: one complete full sync each.
    for stream in ["sim/customers", "sim/orders"] {
        let c = &s["cursors"][stream];
        assert_eq!(c["complete"], true, "{stream}: {c}");
        assert_eq!(c["mode"], "full", "{stream}");
        assert_eq!(c["total_records"], RECORDS, "{stream}");
        assert_eq!(c["records"], RECORDS, "{stream}");
        assert_eq!(c["pages"], 2, "{stream}: 100 records in pages of 50");
        assert!(c["last_sync_at"].is_string() && c["last_full_sync_at"] == c["last_sync_at"]);
    }
    assert_eq!(s["cursors"].as_object().unwrap().len(), 2);

    // Quota: configured beside the live state its owner saved in intake.quota.
    let q = &s["quotas"]["sim"];
    assert_eq!(q["sources"], serde_json::json!(["sim"]));
    assert_eq!(
        (q["requests"].as_u64(), q["per_ms"].as_u64()),
        (Some(200), Some(1000))
    );
    assert_eq!(q["mode"], "central");
    let live = &q["live"];
    assert_eq!(live["owner"], "test", "{live}");
    assert_eq!(live["limit"], 200, "{live}");
    let pace = live["requests_per_second"].as_f64().unwrap();
    assert!(pace > 0.0 && pace <= 200.0, "{live}");
    let remaining = live["remaining"]
        .as_u64()
        .expect("the simulator announces what remains");
    assert!(remaining < 200, "{live}");
    assert!(live["paused_until"].is_null(), "{live}");
    assert_eq!(s["quotas"].as_object().unwrap().len(), 1);

    // Groups: one member each while intake run runs; nothing lags, counted exactly.
    let groups: Vec<_> = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["stage"].as_str().unwrap(),
                g["members"].as_u64().unwrap(),
                g["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("fetch", 1, "Stable"),
            ("validate", 1, "Stable"),
            ("dedup", 1, "Stable")
        ]
    );
    let cfg = Config::from_toml(&text).unwrap();
    let names = TopicNames::from_config(&cfg);
    for (stage, topics) in [
        ("validate", vec![names.landing()]),
        (
            "dedup",
            vec![
                names.valid("sim", "customers"),
                names.valid("sim", "orders"),
            ],
        ),
    ] {
        let g = s["lag"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["stage"] == stage)
            .unwrap();
        assert_eq!(g["lag"], 0, "{g}");
        assert_eq!(g["exact"], true, "{g}");
        let by_topic: BTreeMap<String, u64> =
            serde_json::from_value(g["by_topic"].clone()).unwrap();
        assert_eq!(
            by_topic,
            topics.into_iter().map(|t| (t, 0)).collect(),
            "{g}"
        );
    }

    // Dead letters: every drifted id with its kind, and the job's bad record.
    let truth = truth(&sim).await;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_stream: BTreeMap<String, u64> = BTreeMap::new();
    for stream in ["customers", "orders"] {
        for (_, kind) in truth["streams"][stream]["drifted"].as_object().unwrap() {
            *by_kind
                .entry(kind.as_str().unwrap().to_owned())
                .or_default() += 1;
            *by_stream.entry(format!("sim/{stream}")).or_default() += 1;
        }
    }
    *by_kind.entry("type_mismatch".into()).or_default() += 1;
    *by_stream.entry("sim/customers".into()).or_default() += 1;
    let total_dead: u64 = by_kind.values().sum();
    assert!(total_dead > 5, "drift reached the DLQ: {by_kind:?}");
    assert_eq!(serde_json::to_value(&by_kind).unwrap(), s["dlq_by_kind"]);
    assert_eq!(
        serde_json::to_value(&by_stream).unwrap(),
        s["dlq_by_stream"]
    );
    assert_eq!(s["dlq_total"], total_dead);

    // Jobs with their record counts.
    assert_eq!(s["jobs"]["total"], 2);
    assert_eq!(
        s["jobs"]["records"],
        serde_json::json!({"landed": 6, "valid": 5, "dead_lettered": 1, "replayed": 0, "pending": 0})
    );

    // The same for a person.
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .args(["status", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let screen = String::from_utf8(out.stdout).unwrap();
    println!("{screen}");
    for line in [
        "sim/customers",
        "200 per 1s | owner test, limit 200",
        "1 member(s), Stable, lag 0 records",
        &format!("dead letters: {total_dead}"),
        "jobs: 2 (2 validated); records landed 6, valid 5, dead-lettered 1, replayed 0, pending 0",
    ] {
        assert!(screen.contains(line), "`{line}` not in:\n{screen}");
    }

    // Everything comes from Kafka: with intake stopped, the groups are empty and the rest stays.
    run.stop();
    let after = status_json(&path);
    let groups: Vec<_> = after["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["members"].as_u64().unwrap(), g["state"].as_str().unwrap()))
        .collect();
    assert_eq!(groups, [(0, "Empty"), (0, "Empty"), (0, "Empty")]);
    for k in ["cursors", "dlq_by_kind", "dlq_by_stream", "jobs", "lag"] {
        assert_eq!(after[k], s[k], "{k} after intake stopped");
    }
    assert_eq!(after["quotas"]["sim"]["live"]["owner"], "test");
    assert_eq!(after["quotas"]["sim"]["live"]["limit"], 200);
}
