//! Issues 6 and 7, end to end: the whole pipeline (`intake run`: fetch, validate, dedup and
//! serve in one child process) against the simulator on the real stack.
//!
//! intake connects over SASL_SSL with SCRAM-SHA-512, verifying the broker's certificate
//! against the local stack's CA, and to the registry over HTTPS with basic auth (issue 17); the
//! test itself reads over the plaintext listener and the registry's plain port.
//! At the end `intake status`, `intake verify` and `intake config --check` run over the same
//! connection, and the SASL password appears in no output or log.
//! A second, shorter run does a backfill over SASL_SSL with OAUTHBEARER (tokens from the
//! stack's Keycloak, checked by the broker's own OIDC validation), with the registry that takes
//! only Keycloak tokens.
//!
//! 1. Backfill: the simulator starts paused with 300 records per stream (5 % drifted, 1 %
//!    large: 0.99 MB, kept whole, or 1.5 MB, over the topics' 1 MiB and carried by claim-check
//!    reference to the curated topics); once every stream completed its
//!    backfill, the curated topics equal the truth exactly.
//! 2. Live changes: the writer runs for 20 s at 10 writes/s — creates, updates (30 %
//!    backdated by 2–30 min, beyond the 1 min look-back, so incremental polls miss them),
//!    deletes — with 5xx bursts on 2 % of requests, and every customer/order write sent as a
//!    signed webhook to serve, shuffled in windows of 8, 10 % delivered twice, failures retried.
//! 3. The writer pauses; once every stream completed a sync that started after the pause (a
//!    full sync with delete detection for customers and orders) and every webhook was
//!    delivered, the curated topics (last value per key, read_committed) equal the truth
//!    exactly: same keys, same versions, deleted keys tombstoned, drifted keys only in the DLQ
//!    with their kind; and nothing was committed twice anywhere (landing pages, valid and DLQ
//!    records per landing origin, curated emissions per key).

mod support;

use std::time::{Duration, Instant};

use intake::topics::TopicNames;
use support::e2e::{self, Knobs};
use support::*;
use support::{proc, scenario};

const LIVE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_live_changes_full_sync_and_webhooks_equal_the_truth() {
    let started = Instant::now();
    // Large records are resolved by `read_by_topic_name` below.
    let flags = format!(
        "--write-rate 10 {} --webhook-dup-rate 0.1",
        e2e::MESSY_SIM.join(" ")
    );
    let (sim, serve_port) = scenario::paused_sim_with_webhooks(300, &flags).await;
    let knobs = knobs(serve_port);
    // intake connects as a managed Kafka would have it: SASL_SSL, SCRAM-SHA-512, the broker's
    // certificate verified against the stack's CA. The test reads over the plaintext listener.
    let secure = secure_stack();
    let password = std::fs::read_to_string(secure.tls.join("intake.password")).unwrap();
    let password = password.trim();
    let text = config_text_with(
        &secure.sasl_ssl_toml("SCRAM-SHA-512"),
        &secure.registry_toml(),
        &format!("{}{}", e2e::sources(sim.addr, &knobs), serve_client()),
    );
    let registry_password =
        std::fs::read_to_string(secure.tls.join("registry-client.password")).unwrap();
    let mut run = Run::start(&text, "pipeline").await;
    let cfg = run.cfg.clone();

    // --- 1. backfill ------------------------------------------------------------------------
    let (truth0, backfill, _) = run.exactly_the_truth(&sim, run.begun).await;
    assert_eq!(truth0["writes"], 0, "the writer was paused");
    let large: usize = e2e::STREAMS
        .iter()
        .map(|(s, ..)| truth0["streams"][*s]["large"].as_array().unwrap().len())
        .sum();
    let blob_refs = blocking({
        let landing = TopicNames::from_config(&cfg).landing();
        move || {
            read_all(&landing, "read_committed")
                .iter()
                .filter(|r| r.header("intake.kind") == Some("blob-ref"))
                .count()
        }
    })
    .await;
    assert!(
        large > 0 && blob_refs > 0,
        "large records were claim-checked"
    );
    println!(
        "backfill ({:.1} s): {} keys compared, {} matched, {} drifted in the DLQ, {large} large ({blob_refs} blob-refs landed); lost {} doubled {} stale {} wrong {}",
        started.elapsed().as_secs_f64(),
        backfill.compared,
        backfill.matched,
        backfill.drifted_in_dlq,
        backfill.lost,
        backfill.doubled,
        backfill.stale,
        backfill.wrong
    );

    // --- 2. live changes and webhooks -------------------------------------------------------
    sim_admin(&sim, "/admin/resume").await;
    let live_started = Instant::now();
    // At least LIVE, and until the run has exercised everything it claims to (checked below):
    // made sure of, not left to the rates and the machine's speed.
    loop {
        assert!(run.proc.running(), "intake run stopped\n{}", run.tail());
        tokio::time::sleep(Duration::from_millis(500)).await;
        if live_started.elapsed() < LIVE {
            continue;
        }
        let stats = sim_stats(&sim).await;
        let (w, h) = (&stats["writer"], &stats["webhooks"]);
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let missing: Vec<&str> = [
            (n(&w["writes"]) >= 100, "100 writes"),
            (n(&w["backdated"]) > 0, "a backdated update"),
            (n(&w["deletes"]) > 0, "a delete"),
            (n(&h["duplicated"]) > 0, "a duplicated webhook"),
            (n(&stats["faults"]["errors"]) > 0, "a 5xx answer"),
        ]
        .into_iter()
        .filter(|(done, _)| !done)
        .map(|(_, what)| what)
        .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            live_started.elapsed() < 6 * LIVE,
            "after {:?} the live phase still lacks {missing:?}: {stats}",
            live_started.elapsed()
        );
    }
    let paused = sim_admin(&sim, "/admin/pause").await;
    let paused_at = time::OffsetDateTime::now_utc();

    // --- 3. a full sync after the pause, every webhook delivered, then the truth -------------
    let hooks = e2e::webhooks_delivered(&sim, Duration::from_secs(60)).await;
    let (truth, f, doubles) = run.exactly_the_truth(&sim, paused_at).await;
    assert_eq!(
        truth["writes"], paused["writes"],
        "no write after the pause"
    );
    // The same, read as a tool that knows only the curated topics' names would (schemas from
    // `<topic>-value`, decoded by apache-avro): exactly the truth's live, undrifted records.
    let by_name = e2e::read_by_topic_name(&cfg).await;
    let want = e2e::truth_live(&truth);
    for (stream, live) in &want {
        let got = &by_name[stream];
        let missing: Vec<_> = live
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, _)| !live.contains_key(*k))
            .take(5)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && got.len() == live.len(),
            "{stream} read by topic name: {} keys, truth {}; missing or other version {missing:?}, not in the truth {extra:?}",
            got.len(),
            live.len()
        );
    }

    // The run exercised what it claims to.
    let stats = sim_stats(&sim).await;
    let w = &stats["writer"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert!(n(&w["writes"]) >= 100, "writes: {w}");
    assert!(
        n(&w["backdated"]) > 0 && n(&w["deletes"]) > 0,
        "writer: {w}"
    );
    assert!(f.tombstoned > 0, "deleted keys were tombstoned");
    assert_eq!(hooks["dropped"], 0, "no webhook given up: {hooks}");
    assert!(
        n(&hooks["duplicated"]) > 0,
        "webhooks were duplicated: {hooks}"
    );
    assert!(
        n(&stats["faults"]["errors"]) > 0,
        "5xx answers: {}",
        stats["faults"]
    );
    // Every event the simulator made landed (by event id), however often it was delivered.
    let landed = blocking({
        let cfg = cfg.clone();
        move || e2e::landed_events(&cfg)
    })
    .await;
    let events = landed.0;
    e2e::assert_webhook_ledger(&hooks, &landed);
    let token = &stats["tokens"]["demo"];
    assert_eq!(token["throttled"], 0, "quota: {token}");

    // The operator's commands over the same secured connection, and every secret of the run
    // looked for everywhere.
    let secrets = [
        ("the SASL password", password.to_owned()),
        ("the registry password", registry_password.trim().to_owned()),
    ];
    run.commands_and_secret_scan(
        &sim,
        knobs.serve_port,
        "sasl_ssl SCRAM-SHA-512 as intake",
        &secrets,
        1000,
    )
    .await;
    println!(
        "after {} writes ({} backdated, {} deletes) and {} webhooks ({} duplicated, {} retried, {events} events landed): \
         {}; {} requests, 0 throttled; whole test {:.1} s",
        w["writes"],
        w["backdated"],
        w["deletes"],
        hooks["enqueued"],
        hooks["duplicated"],
        hooks["retried"],
        summary(&f, &doubles),
        token["requests"],
        started.elapsed().as_secs_f64()
    );
}

/// The pipeline once more, short, with OAuth 2.0 everywhere: `intake run` takes its Kafka
/// tokens from the stack's Keycloak (client credentials of `intake-kafka`, librdkafka's OIDC
/// client) and the broker checks each with Kafka's own OIDC validation (Keycloak's JWKS,
/// issuer, audience) over SASL_SSL, its certificate verified against the stack's CA; schemas
/// are registered in and read from the registry that takes only Keycloak tokens (client
/// credentials of `intake-registry`, over HTTPS). A backfill of 100 records per stream, with
/// 5xx answers and drifted records, must equal the simulator's truth exactly; then the
/// operator's commands run over the same connections and both OAuth client secrets are
/// looked for everywhere, with the run's other secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_oauthbearer_equals_the_truth() {
    let started = Instant::now();
    let kc = blocking(keycloak).await;
    let serve_port = e2e::free_port();
    let sim = scenario::paused_sim(100, "--drift-rate 0.05 --error-rate 0.02").await;
    let knobs = knobs(serve_port);
    let secure = secure_stack();
    let text = config_text_with(
        &secure.oauth_toml(kc, &kc.secret_file("intake-kafka.secret")),
        &secure.oidc_registry_toml(kc, &kc.secret_file("intake-registry.secret")),
        &format!("{}{}", e2e::sources(sim.addr, &knobs), serve_client()),
    );
    let mut run = Run::start(&text, "pipeline-oauth").await;
    let (_, f, doubles) = run.exactly_the_truth(&sim, run.begun).await;
    let secrets = [
        (
            "the Kafka OAuth client secret",
            kc.secret("intake-kafka.secret"),
        ),
        (
            "the registry's OAuth client secret",
            kc.secret("intake-registry.secret"),
        ),
    ];
    run.commands_and_secret_scan(
        &sim,
        serve_port,
        "sasl_ssl OAUTHBEARER as OAuth client intake-kafka",
        &secrets,
        300,
    )
    .await;
    println!(
        "OAUTHBEARER: {}; whole test {:.1} s",
        summary(&f, &doubles),
        started.elapsed().as_secs_f64()
    );
}

/// The sources' settings of both runs: a quota of 40 requests/s, polls every second, a full
/// sync every 8 s with a 1 min look-back, pages of 50.
fn knobs(serve_port: u16) -> Knobs {
    Knobs {
        serve_port,
        quota: 40,
        poll: "1s",
        full_sync_every: "8s",
        lookback: "1m",
        page_size: 50,
    }
}

/// A running `intake run`.
struct Run {
    cfg: intake::config::Config,
    dir: tempfile::TempDir,
    cfg_path: std::path::PathBuf,
    log: std::path::PathBuf,
    proc: proc::Proc,
    /// Just before it started.
    begun: time::OffsetDateTime,
}

impl Run {
    /// Starts `intake run` with the config `text` as instance `instance`. It applies topics and
    /// schemas itself; the topics are applied first, so the test can read them at once.
    async fn start(text: &str, instance: &str) -> Run {
        let cfg = intake::config::Config::from_toml(text).unwrap();
        apply_topics(&cfg).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = write_config(dir.path(), text);
        let log = dir.path().join("intake-run.log");
        let begun = time::OffsetDateTime::now_utc();
        let proc = proc::intake(&["run"], &log)
            .config(&cfg_path)
            .env("INTAKE_INSTANCE_ID", instance)
            .spawn();
        Run {
            cfg,
            dir,
            cfg_path,
            log,
            proc,
            begun,
        }
    }

    /// The last 40 lines of its log.
    fn tail(&self) -> String {
        proc::tail(&self.log, 40)
    }

    /// Once every stream completed a sync that started after `after`, the curated topics equal
    /// the simulator's truth exactly and nothing was committed twice (a diagnosis is printed
    /// first when they differ); the run still runs. Returns the truth, the figures and the
    /// counts.
    async fn exactly_the_truth(
        &mut self,
        sim: &intake::sim::SimHandle,
        after: time::OffsetDateTime,
    ) -> (serde_json::Value, e2e::Figures, e2e::Doubles) {
        let cfg = &self.cfg;
        e2e::wait_for_syncs_after(cfg, after, Duration::from_secs(90), || self.tail()).await;
        let truth = truth(sim).await;
        let report = e2e::converge(cfg, &truth, Duration::from_secs(60)).await;
        if !e2e::equal(&report) {
            println!(
                "{}",
                e2e::diagnose(cfg, std::slice::from_ref(&self.log)).await
            );
        }
        let doubles = blocking({
            let cfg = cfg.clone();
            move || e2e::doubles(&cfg)
        })
        .await;
        assert!(self.proc.running(), "intake run stopped\n{}", self.tail());
        let f = e2e::assert_exact(&report, &doubles, &truth, true);
        (truth, f, doubles)
    }

    /// The operator's commands over the run's secured connection — `status`, `verify`
    /// (against the simulator's truth document), `config --check` (whose Kafka line must
    /// contain `how`) and `config` — and a `dlq replay` of every dead letter succeed; then
    /// `secrets` (the run's own, plus the webhook secret and the serve API key) appear in no
    /// command's output or log, in the run's log, in serve's `/metrics`, `/openapi.json` and
    /// answers (headers and bodies, with and without the key), nor in any record (keys,
    /// headers, values) of the landing, DLQ, jobs, cursors, valid and curated topics, of which
    /// at least `min_records` are scanned. Then the run must stop cleanly.
    async fn commands_and_secret_scan(
        mut self,
        sim: &intake::sim::SimHandle,
        serve_port: u16,
        how: &str,
        secrets: &[(&str, String)],
        min_records: usize,
    ) {
        let (cfg, cfg_path, dir, log) = (&self.cfg, &self.cfg_path, self.dir.path(), &self.log);
        let truth_url = format!("http://{}/admin/truth", sim.addr);
        let mut outputs = String::new();
        // serve's own answers: metrics, the API description, and a job lookup with the API key
        // (404: no such job) and without it (401).
        let serve = format!("http://127.0.0.1:{serve_port}");
        for (path, client, want) in [
            ("/metrics", reqwest::Client::new(), 200),
            ("/openapi.json", reqwest::Client::new(), 200),
            ("/v1/jobs/no-such-job", serve_http(), 404),
            ("/v1/jobs/no-such-job", reqwest::Client::new(), 401),
        ] {
            let r = client.get(format!("{serve}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), want, "GET {path}");
            outputs.push_str(&format!("{:?}\n", r.headers()));
            outputs.push_str(&r.text().await.unwrap());
        }
        assert!(outputs.contains("intake_"), "metrics were read");
        for args in [
            vec!["status", "--json"],
            vec!["verify", "--source", "sim", "--truth", truth_url.as_str()],
            vec!["config", "--check"],
            vec!["config"],
        ] {
            let (out, log) = command(dir, cfg_path, &args, "over SASL_SSL");
            outputs.push_str(&out);
            outputs.push_str(&log);
        }
        // A DLQ replay over the same connection: every dead letter re-landed in one transaction.
        let (out, replay_log) =
            command(dir, cfg_path, &["dlq", "replay", "--json"], "over SASL_SSL");
        let replay: serde_json::Value = serde_json::from_str(&out).expect("replay --json");
        let (chosen, landed) = (replay["chosen"].as_u64(), replay["landed"].as_u64());
        let skipped = replay["skipped"].as_array().map_or(0, Vec::len) as u64;
        assert!(
            landed.is_some_and(|l| l > 0 && Some(l + skipped) == chosen),
            "dlq replay over SASL_SSL: {out}"
        );
        outputs.push_str(&out);
        outputs.push_str(&replay_log);
        assert!(
            outputs.contains("kafka: ok") && outputs.contains(how),
            "config --check: {outputs}"
        );
        assert!(outputs.contains("registry: ok — https://"), "{outputs}");
        outputs.push_str(&std::fs::read_to_string(log).unwrap());
        let mut secrets = secrets.to_vec();
        secrets.push(("the webhook secret", e2e::WEBHOOK_SECRET.to_owned()));
        secrets.push(("the serve API key", SERVE_KEY.to_owned()));
        for (what, secret) in &secrets {
            assert!(
                secret.len() >= 8 && !outputs.contains(secret.as_str()),
                "{what} appears in a command's output, a log or an HTTP answer"
            );
        }
        // Nor in any record the run wrote.
        let found = blocking({
            let names = TopicNames::from_config(cfg);
            let secrets: Vec<String> = secrets.iter().map(|(_, s)| s.clone()).collect();
            move || {
                let mut topics = vec![names.landing(), names.dlq(), names.jobs(), names.cursors()];
                for (s, ..) in e2e::STREAMS {
                    topics.push(names.valid("sim", s));
                    topics.push(names.curated("sim", s));
                }
                let mut found = Vec::new();
                let mut scanned = 0usize;
                for t in topics {
                    for r in read_all(&t, "read_uncommitted") {
                        scanned += 1;
                        let mut bytes: Vec<&[u8]> = vec![r.key.as_deref().unwrap_or_default()];
                        bytes.extend(r.value.as_deref());
                        bytes.extend(r.headers.iter().map(|(_, v)| v.as_slice()));
                        for secret in &secrets {
                            if bytes
                                .iter()
                                .any(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
                            {
                                found.push(format!("{t} offset {}", r.offset));
                            }
                        }
                    }
                }
                assert!(scanned > min_records, "scanned {scanned} records");
                found
            }
        })
        .await;
        assert!(found.is_empty(), "a secret in records: {found:?}");
        let status = self.proc.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "intake run stops cleanly: {status}\n{}",
            proc::tail(log, 40)
        );
    }
}

/// A run's verdict for its report line: keys compared, matched, tombstoned and drifted in the
/// DLQ; lost, doubled, stale and wrong; and the records read of each topic kind.
fn summary(f: &e2e::Figures, d: &e2e::Doubles) -> String {
    format!(
        "{} keys compared, {} matched, {} tombstoned, {} drifted in the DLQ; lost {} doubled {} stale {} wrong {}; \
         {} landing / {} valid / {} DLQ / {} curated records",
        f.compared,
        f.matched,
        f.tombstoned,
        f.drifted_in_dlq,
        f.lost,
        f.doubled,
        f.stale,
        f.wrong,
        d.landing_records,
        d.valid_records,
        d.dlq_records,
        d.curated_records,
    )
}

/// Runs `intake <args> --config <cfg_path>` to its end (two minutes at most, logging to
/// `<dir>/<command>.log`) and asserts it succeeded (`how` says how it ran); its standard
/// output and its log.
fn command(
    dir: &std::path::Path,
    cfg_path: &std::path::Path,
    args: &[&str],
    how: &str,
) -> (String, String) {
    let clog = dir.join(format!("{}.log", args[0]));
    let (status, out) = proc::intake(args, &clog)
        .config(cfg_path)
        .capture_stdout()
        .spawn()
        .wait_output(Duration::from_secs(120));
    assert!(
        status.success(),
        "intake {args:?} {how}: {status}\n{out}\n{}",
        proc::tail(&clog, 30)
    );
    (out, std::fs::read_to_string(&clog).unwrap_or_default())
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The simulator's sources (no webhooks) with keys with a schema: customers keyed by `/id` and
/// orders by the composite `["/customer_id", "/id"]` (an order's customer never changes), both
/// `key_format = "avro"`; events keep the default string keys.
fn avro_key_sources(sources: &str) -> String {
    let blocks: Vec<String> = sources
        .split("\n[[sources.streams]]\n")
        .map(|b| {
            if b.starts_with("name = \"customers\"") {
                format!("{b}key_format = \"avro\"\n")
            } else if b.starts_with("name = \"orders\"") {
                let b = b.replace(
                    "primary_key = \"/id\"",
                    "primary_key = [\"/customer_id\", \"/id\"]",
                );
                format!("{b}key_format = \"avro\"\n")
            } else {
                b.to_owned()
            }
        })
        .collect();
    assert_eq!(blocks.len(), 4, "a source and three streams");
    blocks.join("\n[[sources.streams]]\n")
}

/// Issue 22, keys with a schema: with `key_format = "avro"` (customers by `id`, orders by the
/// composite key `customer_id`, `id`) fetch, validate and dedup run as separate processes; a
/// backfill, then live creates, updates and deletes (caught by full syncs with delete
/// detection) while dedup is SIGKILLed twice and restarted (its state restored from the
/// curated topics' Avro keys). Then, read as a TopicNameStrategy tool does — key schemas from
/// `<topic>-key`, value schemas from `<topic>-value`, both over the registry's HTTP API, decoded
/// with apache-avro — every curated key's fields equal the truth record's primary key values,
/// the deleted keys end in tombstones under that same key, the live records equal the truth
/// exactly, and nothing was committed twice (a restore that did not recognise the keys would
/// emit the full syncs' records again). The valid topics' keys are the same Avro records
/// (`<valid topic>-key`), events keep their UTF-8 keys, and a changed key schema is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_keys_composite_and_single_equal_the_truth_through_dedup_restarts() {
    let started = Instant::now();
    // Large records over the topics' 1 MiB: these travel as claim-check references keyed like
    // any record.
    let sim = scenario::paused_sim(
        150,
        "--write-rate 20 --delete-share 0.2 --drift-rate 0.03 --large-rate 0.02 --large-bytes 1500000",
    )
    .await;
    let knobs = Knobs {
        serve_port: e2e::free_port(),
        quota: 60,
        poll: "1s",
        full_sync_every: "5s",
        lookback: "1m",
        page_size: 50,
    };
    let text = config_text(&avro_key_sources(&e2e::sources(sim.addr, &knobs)));
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    let names = TopicNames::from_config(&cfg);
    apply_topics(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &text);

    // `schemas apply` registers each avro-keyed stream's key schema under both key subjects.
    let (out, _) = command(
        dir.path(),
        &cfg_path,
        &["schemas", "apply"],
        "with Avro keys",
    );
    for s in ["customers", "orders"] {
        for subject in [
            format!("{}-key", names.curated("sim", s)),
            format!("{}-key", names.valid("sim", s)),
        ] {
            assert!(
                out.contains(&subject),
                "schemas apply names {subject}: {out}"
            );
        }
    }
    let order_key = subject_versions(&format!("{}-key", names.curated("sim", "orders"))).await;
    assert_eq!(order_key.len(), 1, "{order_key:?}");
    let key_schema: serde_json::Value = serde_json::from_str(&order_key[0].2).unwrap();
    assert_eq!(
        key_schema["fields"],
        serde_json::json!([{"name": "customer_id", "type": "string"}, {"name": "id", "type": "string"}]),
        "the composite key's fields, typed as in the value schema"
    );
    assert!(
        subject_versions(&format!("{}-key", names.curated("sim", "events")))
            .await
            .is_empty(),
        "string keys have no key subject"
    );

    let spawn = |stage: &str| {
        proc::intake(&[stage], dir.path().join(format!("{stage}.log")))
            .config(&cfg_path)
            .env("INTAKE_INSTANCE_ID", format!("keys-{stage}"))
            .spawn()
    };
    let begun = time::OffsetDateTime::now_utc();
    let mut fetch = spawn("fetch");
    let mut validate = spawn("validate");
    let mut dedup = spawn("dedup");
    let logs: Vec<std::path::PathBuf> = ["fetch", "validate", "dedup"]
        .iter()
        .map(|s| dir.path().join(format!("{s}.log")))
        .collect();
    let tail = || {
        logs.iter()
            .map(|l| proc::tail(l, 15))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // --- 1. backfill --------------------------------------------------------------------------
    e2e::wait_for_syncs_after(&cfg, begun, Duration::from_secs(90), tail).await;
    let truth0 = truth(&sim).await;
    let (backfill, _) = e2e::assert_converged(&cfg, &truth0, &logs, false).await;
    println!(
        "backfill ({:.1} s): {} keys compared, {} matched, {} drifted in the DLQ",
        started.elapsed().as_secs_f64(),
        backfill.compared,
        backfill.matched,
        backfill.drifted_in_dlq
    );

    // --- 2. live changes; dedup SIGKILLed, restarted (restored from the curated topics) twice --
    dedup.kill();
    sim_admin(&sim, "/admin/resume").await;
    let writes_at_least = |n: u64| {
        let sim = &sim;
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let w = sim_stats(sim).await["writer"].clone();
                if w["writes"].as_u64().unwrap_or(0) >= n && w["deletes"].as_u64().unwrap_or(0) > 0
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the writer made no {n} writes: {w}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    writes_at_least(60).await;
    let mut dedup = spawn("dedup");
    // The restored dedup takes over: new versions and full syncs flow through it.
    writes_at_least(120).await;
    assert!(dedup.running(), "dedup stopped\n{}", tail());
    dedup.kill();
    let mut dedup = spawn("dedup");
    writes_at_least(160).await;
    let paused = sim_admin(&sim, "/admin/pause").await;
    let paused_at = time::OffsetDateTime::now_utc();

    // --- 3. after a full sync that began after the pause: the truth, exactly -------------------
    e2e::wait_for_syncs_after(&cfg, paused_at, Duration::from_secs(90), tail).await;
    let truth = truth(&sim).await;
    assert_eq!(
        truth["writes"], paused["writes"],
        "no write after the pause"
    );
    let (f, doubles) = e2e::assert_converged(&cfg, &truth, &logs, false).await;
    assert!(f.tombstoned > 0, "deleted keys were tombstoned");

    // Read by topic name, keys included.
    let (by_name, resolved, keys) = e2e::read_by_topic_name_with_keys(&cfg).await;
    let want = e2e::truth_live(&truth);
    for (stream, live) in &want {
        assert_eq!(&by_name[stream], live, "{stream} read by topic name");
    }
    assert_eq!(
        keys.keys().collect::<Vec<_>>(),
        ["customers", "orders"],
        "the avro-keyed streams"
    );
    let mut tombstones = 0;
    for (stream, pointers) in [
        ("customers", vec!["id"]),
        ("orders", vec!["customer_id", "id"]),
    ] {
        let t = &truth["streams"][stream];
        for (id, k) in &keys[stream] {
            if k.live {
                let record = &t["live"][id]["record"];
                let expected: Vec<(String, String)> = pointers
                    .iter()
                    .map(|f| ((*f).to_owned(), record[*f].as_str().unwrap().to_owned()))
                    .collect();
                assert_eq!(k.fields, expected, "{stream}/{id}: the key's fields");
            } else {
                // A tombstone under the key the record had: its fields name the deleted id
                // (a tombstone under other key bytes would leave the record live above).
                assert!(
                    t["deleted"].get(id).is_some() || t["drifted"].get(id).is_some(),
                    "{stream}/{id} tombstoned but not deleted in the truth"
                );
                assert_eq!(
                    k.fields.len(),
                    pointers.len(),
                    "{stream}/{id}: {:?}",
                    k.fields
                );
                tombstones += 1;
            }
        }
        let live_keys = keys[stream].values().filter(|k| k.live).count();
        assert_eq!(live_keys, want[stream].len(), "{stream}: live keys");
    }
    assert!(tombstones > 0, "tombstones carry Avro keys");
    let claim_checked: usize = ["customers", "orders"]
        .iter()
        .map(|s| resolved[*s].len())
        .sum();

    // The valid topics carry the same Avro keys, under `<valid topic>-key` (same schema, same id).
    let valid_keys = blocking({
        let names = names.clone();
        move || {
            let mut ids = std::collections::BTreeMap::new();
            for s in ["customers", "orders"] {
                for r in read_all(&names.valid("sim", s), "read_committed") {
                    if r.header("intake.kind").is_some() {
                        continue; // sync markers keep their landing key
                    }
                    let key = r.key.as_deref().unwrap();
                    let (id, _) = intake::registry::wire::unframe(key).unwrap();
                    *ids.entry((s, id)).or_insert(0usize) += 1;
                }
            }
            ids
        }
    })
    .await;
    for s in ["customers", "orders"] {
        let curated = subject_versions(&format!("{}-key", names.curated("sim", s))).await;
        let valid = subject_versions(&format!("{}-key", names.valid("sim", s))).await;
        assert_eq!(curated.len(), 1, "{s}: {curated:?}");
        assert_eq!(valid.len(), 1, "{s}: {valid:?}");
        assert_eq!(curated[0].1, valid[0].1, "{s}: one key schema id");
        let used: Vec<u32> = valid_keys
            .keys()
            .filter(|(st, _)| *st == s)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            used,
            [valid[0].1],
            "{s}: every valid key is framed with the key schema id"
        );
    }

    // A key field's type cannot change: the key subjects refuse another key schema.
    let registry = intake::registry::Registry::new(&cfg.registry).unwrap();
    let changed = order_key[0].2.replace(
        r#"{"name":"id","type":"string"}"#,
        r#"{"name":"id","type":"long"}"#,
    );
    assert_ne!(changed, order_key[0].2);
    let refused = intake::registry::apply_key(
        &registry,
        cfg.registry.subject_strategy,
        &names.valid("sim", "orders"),
        &names.curated("sim", "orders"),
        &changed,
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(intake::registry::RegistryError::Incompatible { .. })
        ),
        "{refused:?}"
    );

    // The operator's commands read Avro keys.
    let truth_url = format!("http://{}/admin/truth", sim.addr);
    for args in [
        vec!["verify", "--source", "sim", "--truth", truth_url.as_str()],
        vec!["status", "--json"],
    ] {
        command(dir.path(), &cfg_path, &args, "with Avro keys");
    }
    for p in [&mut fetch, &mut validate, &mut dedup] {
        let status = p.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "a stage stops cleanly: {status}\n{}",
            tail()
        );
    }
    println!(
        "avro keys: {}; Avro-keyed tombstones read: {tombstones}, {claim_checked} live records by claim-check; \
         dedup SIGKILLed twice; whole test {:.1} s",
        summary(&f, &doubles),
        started.elapsed().as_secs_f64()
    );
}
