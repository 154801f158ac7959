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
use support::proc;
use support::*;

const RECORDS: &str = "300";
const LIVE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_live_changes_full_sync_and_webhooks_equal_the_truth() {
    let started = Instant::now();
    let serve_port = e2e::free_port();
    let hook = format!("http://127.0.0.1:{serve_port}/v1/webhooks/sim");
    let sim = sim(&[
        "--records",
        RECORDS,
        "--token",
        "demo=100",
        "--start-paused",
        "--write-rate",
        "10",
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
        // Over serve's and fetch's inline limit (900 KiB: pages holding one are claim-checked);
        // 0.99 MB records stay whole in the 1 MiB valid and curated topics, 1.5 MB ones travel
        // there by claim-check reference (resolved by `read_by_topic_name` below).
        "--large-bytes",
        "990000,1500000",
        "--error-rate",
        "0.02",
        "--webhook-url",
        &hook,
        "--webhook-secret",
        e2e::WEBHOOK_SECRET,
        "--webhook-dup-rate",
        "0.1",
    ])
    .await;
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
    let Run {
        cfg,
        dir,
        cfg_path,
        log,
        mut run,
        begun,
    } = start_run(&text, "pipeline").await;
    let tail = || proc::tail(&log, 40);

    // --- 1. backfill ------------------------------------------------------------------------
    let (truth0, backfill, _) = exactly_the_truth(&cfg, &sim, &log, &mut run, begun).await;
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
        assert!(run.running(), "intake run stopped\n{}", tail());
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
    let (truth, f, doubles) = exactly_the_truth(&cfg, &sim, &log, &mut run, paused_at).await;
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
    commands_and_secret_scan(
        &cfg,
        &cfg_path,
        dir.path(),
        &log,
        &sim,
        knobs.serve_port,
        "sasl_ssl SCRAM-SHA-512 as intake",
        &secrets,
        1000,
        run,
    )
    .await;
    println!(
        "after {} writes ({} backdated, {} deletes) and {} webhooks ({} duplicated, {} retried, {events} events landed): \
         {} keys compared, {} matched, {} tombstoned, {} drifted in the DLQ; lost {} doubled {} stale {} wrong {}; \
         {} landing / {} valid / {} DLQ / {} curated records; {} requests, 0 throttled; whole test {:.1} s",
        w["writes"],
        w["backdated"],
        w["deletes"],
        hooks["enqueued"],
        hooks["duplicated"],
        hooks["retried"],
        f.compared,
        f.matched,
        f.tombstoned,
        f.drifted_in_dlq,
        f.lost,
        f.doubled,
        f.stale,
        f.wrong,
        doubles.landing_records,
        doubles.valid_records,
        doubles.dlq_records,
        doubles.curated_records,
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
    let sim = sim(&[
        "--records",
        "100",
        "--token",
        "demo=100",
        "--start-paused",
        "--drift-rate",
        "0.05",
        "--error-rate",
        "0.02",
    ])
    .await;
    let knobs = knobs(serve_port);
    let secure = secure_stack();
    let text = config_text_with(
        &secure.oauth_toml(kc, &kc.secret_file("intake-kafka.secret")),
        &secure.oidc_registry_toml(kc, &kc.secret_file("intake-registry.secret")),
        &format!("{}{}", e2e::sources(sim.addr, &knobs), serve_client()),
    );
    let Run {
        cfg,
        dir,
        cfg_path,
        log,
        mut run,
        begun,
    } = start_run(&text, "pipeline-oauth").await;
    let (_, f, doubles) = exactly_the_truth(&cfg, &sim, &log, &mut run, begun).await;
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
    commands_and_secret_scan(
        &cfg,
        &cfg_path,
        dir.path(),
        &log,
        &sim,
        serve_port,
        "sasl_ssl OAUTHBEARER as OAuth client intake-kafka",
        &secrets,
        300,
        run,
    )
    .await;
    println!(
        "OAUTHBEARER: {} keys compared, {} matched, {} drifted in the DLQ; lost {} doubled {} stale {} wrong {}; \
         {} landing / {} valid / {} curated records; whole test {:.1} s",
        f.compared,
        f.matched,
        f.drifted_in_dlq,
        f.lost,
        f.doubled,
        f.stale,
        f.wrong,
        doubles.landing_records,
        doubles.valid_records,
        doubles.curated_records,
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
    run: proc::Proc,
    /// Just before it started.
    begun: time::OffsetDateTime,
}

/// Starts `intake run` with the config `text` as instance `instance`. It applies topics and
/// schemas itself; the topics are applied first, so the test can read them at once.
async fn start_run(text: &str, instance: &str) -> Run {
    let cfg = intake::config::Config::from_toml(text).unwrap();
    apply_topics(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), text);
    let log = dir.path().join("intake-run.log");
    let begun = time::OffsetDateTime::now_utc();
    let run = proc::intake(&["run"], &log)
        .config(&cfg_path)
        .env("INTAKE_INSTANCE_ID", instance)
        .spawn();
    Run {
        cfg,
        dir,
        cfg_path,
        log,
        run,
        begun,
    }
}

/// Once every stream completed a sync that started after `after`, the curated topics equal
/// the simulator's truth exactly and nothing was committed twice (a diagnosis is printed
/// first when they differ); `run` still runs. Returns the truth, the figures and the counts.
async fn exactly_the_truth(
    cfg: &intake::config::Config,
    sim: &intake::sim::SimHandle,
    log: &std::path::Path,
    run: &mut proc::Proc,
    after: time::OffsetDateTime,
) -> (serde_json::Value, e2e::Figures, e2e::Doubles) {
    let tail = || proc::tail(log, 40);
    e2e::wait_for_syncs_after(cfg, after, Duration::from_secs(90), tail).await;
    let truth = truth(sim).await;
    let report = e2e::converge(cfg, &truth, Duration::from_secs(60)).await;
    if !e2e::equal(&report) {
        println!("{}", e2e::diagnose(cfg, &[log.to_owned()]).await);
    }
    let doubles = blocking({
        let cfg = cfg.clone();
        move || e2e::doubles(&cfg)
    })
    .await;
    assert!(run.running(), "intake run stopped\n{}", tail());
    let f = e2e::assert_exact(&report, &doubles, &truth, true);
    (truth, f, doubles)
}

/// The operator's commands over the run's secured connection — `status`, `verify` (against
/// the simulator's truth document), `config --check` (whose Kafka line must contain `how`) and
/// `config` — succeed; then `secrets` (the run's own, plus the webhook secret and the serve API
/// key) appear in no command's output or log, in the run's log, in serve's `/metrics`,
/// `/openapi.json` and answers (headers and bodies, with and without the key), nor in any
/// record (keys, headers, values) of the landing, DLQ, jobs, cursors, valid and curated topics,
/// of which at least `min_records` are scanned. Then `run` must stop cleanly.
#[allow(clippy::too_many_arguments)]
async fn commands_and_secret_scan(
    cfg: &intake::config::Config,
    cfg_path: &std::path::Path,
    dir: &std::path::Path,
    log: &std::path::Path,
    sim: &intake::sim::SimHandle,
    serve_port: u16,
    how: &str,
    secrets: &[(&str, String)],
    min_records: usize,
    mut run: proc::Proc,
) {
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
        let clog = dir.join(format!("{}.log", args[0]));
        let (status, out) = proc::intake(&args, &clog)
            .config(cfg_path)
            .capture_stdout()
            .spawn()
            .wait_output(Duration::from_secs(120));
        assert!(
            status.success(),
            "intake {args:?} over SASL_SSL: {status}\n{out}\n{}",
            proc::tail(&clog, 30)
        );
        outputs.push_str(&out);
        outputs.push_str(&std::fs::read_to_string(&clog).unwrap_or_default());
    }
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
    let status = run.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "intake run stops cleanly: {status}\n{}",
        proc::tail(log, 40)
    );
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}
