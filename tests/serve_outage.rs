//! Issue 7: with the broker stopped, serve answers 503 and acknowledges nothing; after it
//! returns, every event (and job) that got a 2xx is in committed landing, none twice.
//!
//! The broker this test stops is its own: `scripts/stack start kafka` with
//! `INTAKE_STACK_DIR=target/stack-outage`, Kafka on `OUTAGE_KAFKA_PORT` (19292; the controller
//! on the next port). The shared stack is never touched. The private broker is stopped when
//! the test ends, pass or fail.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intake::config::Config;
use intake::topics::TopicNames;
use support::*;

const SECRET: &str = "whsec-outage";

/// The private broker, stopped on drop.
struct PrivateKafka {
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateKafka {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `scripts/stack <args>` against the private stack; returns how long it took.
    fn stack(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        let out = std::process::Command::new(root().join("scripts/stack"))
            .args(args)
            .env("INTAKE_STACK_DIR", &self.dir)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            // Never the shared registry's ports, even by accident.
            .env("REGISTRY_PORT", (self.port + 2).to_string())
            .env("REGISTRY_MGMT_PORT", (self.port + 3).to_string())
            .env("KAFKA_HEAP", "-Xmx384m -Xms128m")
            .output()
            .expect("scripts/stack runs");
        assert!(
            out.status.success(),
            "scripts/stack {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    fn start() -> Self {
        let port = std::env::var("OUTAGE_KAFKA_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(19292);
        let k = PrivateKafka {
            dir: root().join("target/stack-outage"),
            port,
        };
        assert_ne!(
            k.bootstrap(),
            brokers(),
            "the outage test must not stop the shared broker"
        );
        k.stack(&["start", "kafka"]);
        k
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("scripts/stack"))
            .args(["stop", "kafka"])
            .env("INTAKE_STACK_DIR", &self.dir)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .status();
    }
}

/// A committed topic of the private broker, whole: `(key, headers)` per record.
fn read_committed(bootstrap: &str, topic: &str) -> Vec<(String, BTreeMap<String, String>)> {
    read_all_from(
        bootstrap,
        topic,
        "read_committed",
        Duration::from_secs(30),
        Duration::from_secs(90),
    )
    .into_iter()
    .map(|r| {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let headers = r
            .headers
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        (key, headers)
    })
    .collect()
}

/// One request and what came of it.
#[derive(Debug, Clone)]
struct Sent {
    /// Event id, or job id.
    id: String,
    job: bool,
    started: Instant,
    ended: Instant,
    /// HTTP status; 0 when the request itself failed (no answer).
    status: u16,
}

impl Sent {
    /// Adds a request started at `started` and answered (now) with `status` to `log`.
    fn log(log: &Mutex<Vec<Sent>>, id: String, job: bool, started: Instant, status: u16) {
        log.lock().unwrap().push(Sent {
            id,
            job,
            started,
            ended: Instant::now(),
            status,
        });
    }
}

/// Clients sending signed webhooks (and one sending jobs) without pause until `stop`.
fn drive(
    base: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = serve_http_builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for client in 0..8 {
        let (http, base, stop, log) = (http.clone(), base.clone(), stop.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("e-{client}-{i}");
                let entity = format!("c-{}", i % 50);
                let body = serde_json::to_vec(&serde_json::json!({
                    "event_id": id, "type": "updated", "stream": "customers",
                    "entity_id": entity, "seq": i, "data": {"id": entity, "version": i}
                }))
                .unwrap();
                let started = Instant::now();
                let status = signed_webhook(&http, &base, "shop", SECRET, body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                Sent::log(&log, id, false, started, status);
                if status != 202 {
                    // What a client does after a 503: wait a little (it would then retry).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                i += 1;
            }
        }));
    }
    let (http, stop, log) = (http.clone(), stop.clone(), log.clone());
    tasks.push(tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let id = format!("job-{i}");
            let body = serde_json::to_vec(&serde_json::json!({
                "data": [{"id": format!("o-{i}"), "version": 1}, {"id": format!("p-{i}"), "version": 1}]
            }))
            .unwrap();
            let started = Instant::now();
            let status = http
                .post(format!("{base}/v1/jobs?source=shop&stream=orders"))
                .header("Idempotency-Key", &id)
                .body(body)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            Sent::log(&log, id, true, started, status);
            tokio::time::sleep(Duration::from_millis(50)).await;
            i += 1;
        }
    }));
    tasks
}

/// Waits until `f` holds for the log (checked every 200 ms), or panics after `limit`.
async fn wait_for(
    log: &Arc<Mutex<Vec<Sent>>>,
    limit: Duration,
    what: &str,
    f: impl Fn(&[Sent]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        if f(&log.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ready(http: &reqwest::Client, base: &str) -> Option<u16> {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_broker_stopped_serve_answers_503_and_every_acknowledged_event_lands_once() {
    // serve's own account of the outage (RUST_LOG=intake=info for more).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "intake=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let kafka = tokio::task::spawn_blocking(PrivateKafka::start)
        .await
        .unwrap();
    let text = config_text(&shop_source(&[SECRET], &["customers", "orders"])).replace(
        &format!("brokers = \"{}\"", brokers()),
        &format!("brokers = \"{}\"", kafka.bootstrap()),
    );
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    assert_eq!(cfg.kafka.brokers, kafka.bootstrap());
    apply_topics(&cfg).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_serve, stopped) = stop_signal();
    let serve = tokio::spawn(intake::serve::run(cfg.clone(), listener, stopped));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(&http, &base).await != Some(200) {
        assert!(Instant::now() < deadline, "serve never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let clients = drive(base.clone(), stop_clients.clone(), log.clone());
    let accepted = |s: &[Sent]| s.iter().filter(|x| (200..300).contains(&x.status)).count();
    wait_for(
        &log,
        Duration::from_secs(30),
        "200 accepted requests",
        |s| accepted(s) >= 200,
    )
    .await;

    // Stop the broker while requests keep coming.
    let k = Arc::new(kafka);
    let took = {
        let k = k.clone();
        tokio::task::spawn_blocking(move || k.stack(&["stop", "kafka"]))
            .await
            .unwrap()
    };
    let down = Instant::now();
    eprintln!("broker stopped in {took:?}");
    // Requests started after the broker was gone get 503; serve reports not ready.
    wait_for(
        &log,
        Duration::from_secs(90),
        "20 requests refused with 503 while the broker is down",
        |s| {
            s.iter()
                .filter(|x| x.started > down && x.status == 503)
                .count()
                >= 20
        },
    )
    .await;
    assert_eq!(
        ready(&http, &base).await,
        Some(503),
        "not ready without Kafka"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Bring it back: serve recovers by itself.
    let up_begin = Instant::now();
    let took = {
        let k = k.clone();
        tokio::task::spawn_blocking(move || k.stack(&["start", "kafka"]))
            .await
            .unwrap()
    };
    eprintln!("broker restarted in {took:?}");
    wait_for(
        &log,
        Duration::from_secs(120),
        "200 requests accepted again after the broker returned",
        |s| {
            s.iter()
                .filter(|x| x.started > up_begin && (200..300).contains(&x.status))
                .count()
                >= 200
        },
    )
    .await;
    let recovered = Instant::now();
    stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(ready(&http, &base).await, Some(200));
    let _ = stop_serve.send(());
    serve.await.unwrap().expect("serve stops cleanly");

    // Judge.
    let sent = log.lock().unwrap().clone();
    let outage_window = |x: &Sent| x.started > down && x.ended < up_begin;
    let acked_in_outage: Vec<&Sent> = sent
        .iter()
        .filter(|x| outage_window(x) && x.status != 503)
        .collect();
    assert!(
        acked_in_outage.is_empty(),
        "requests made and answered while the broker was down must all be 503: {acked_in_outage:?}"
    );
    let odd: Vec<&Sent> = sent
        .iter()
        .filter(|x| !matches!(x.status, 200..=299 | 503))
        .collect();
    assert!(odd.is_empty(), "every answer is a 2xx or a 503: {odd:?}");

    let names = TopicNames::from_config(&cfg);
    let landing = {
        let (b, t) = (k.bootstrap(), names.landing());
        tokio::task::spawn_blocking(move || read_committed(&b, &t))
            .await
            .unwrap()
    };
    let mut landed: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for (_, h) in &landing {
        let key = match (h.get("intake.event_id"), h.get("intake.job_id")) {
            (Some(e), None) => (false, e.clone()),
            (None, Some(j)) => (true, j.clone()),
            other => panic!("a landing record that is neither an event nor a job: {other:?}"),
        };
        *landed.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "landed twice: {twice:?}");
    let acked: Vec<&Sent> = sent
        .iter()
        .filter(|x| (200..300).contains(&x.status))
        .collect();
    let lost: Vec<&&Sent> = acked
        .iter()
        .filter(|x| !landed.contains_key(&(x.job, x.id.clone())))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not landed: {lost:?}");
    // What landed was sent; a 503 may still have landed when its transaction committed as the
    // client gave up (the client's retry is then deduplicated downstream by event id).
    let by_id: BTreeMap<(bool, String), &Sent> =
        sent.iter().map(|x| ((x.job, x.id.clone()), x)).collect();
    let unknown: Vec<_> = landed.keys().filter(|k| !by_id.contains_key(*k)).collect();
    assert!(unknown.is_empty(), "landed but never sent: {unknown:?}");
    let refused_but_landed = landed.keys().filter(|k| by_id[*k].status == 503).count();
    let jobs_acked = acked.iter().filter(|x| x.job).count();
    let refused = sent.iter().filter(|x| x.status == 503).count();
    let in_outage = sent
        .iter()
        .filter(|x| x.started > down && x.started < up_begin)
        .count();
    // Jobs are in the registry exactly as acknowledged.
    let registry = {
        let (b, t) = (k.bootstrap(), names.jobs());
        tokio::task::spawn_blocking(move || read_committed(&b, &t))
            .await
            .unwrap()
    };
    let registered: HashSet<&str> = registry.iter().map(|(key, _)| key.as_str()).collect();
    for j in acked.iter().filter(|x| x.job) {
        assert!(
            registered.contains(j.id.as_str()),
            "job {} not registered",
            j.id
        );
    }
    eprintln!(
        "sent {} requests ({} while the broker was down), {} acknowledged ({} jobs), {} refused with 503 \
         ({} of them landed all the same), landing {} records, none twice, none lost; \
         recovered {:?} after the restart began",
        sent.len(),
        in_outage,
        acked.len(),
        jobs_acked,
        refused,
        refused_but_landed,
        landing.len(),
        recovered - up_begin,
    );
    assert_eq!(landing.len(), landed.len());
    assert!(
        jobs_acked >= 2,
        "jobs were acknowledged before and after the outage"
    );
    drop(k);
}
