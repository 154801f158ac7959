//! Shared helpers for integration tests against the real local stack (`scripts/stack start`).
//!
//! Every test gets its own topic prefix and group prefix, so tests run in parallel against one
//! broker without seeing each other's data.
#![allow(dead_code)]

pub mod e2e;
pub mod group;
pub mod judge;
pub mod ledger;
pub mod proc;
pub mod scenario;

use std::time::Duration;

use intake::config::Config;
use intake::kafka::Kafka;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

/// A private stack for this test binary (bootstrap servers, registry URL), set once before
/// anything talks to Kafka; see [`use_stack`].
static STACK: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Points every helper of this test binary (configs, readers) at another stack, e.g. a
/// private one a test restarts. Call once, first.
pub fn use_stack(brokers: &str, registry_url: &str) {
    STACK
        .set((brokers.to_owned(), registry_url.to_owned()))
        .expect("use_stack is called once, before anything else");
}

/// GETs `url` with `client` and parses the answer as JSON (the test fails otherwise).
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// GETs `url` with a default client; the body as text (the test fails if there is none).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Whether `<base>/readyz` answers 200 now.
pub async fn is_ready(base: &str) -> bool {
    reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Asks [`is_ready`] up to `tries` times, `every` apart, until it is; whether it was.
pub async fn wait_ready(base: &str, tries: usize, every: Duration) -> bool {
    for _ in 0..tries {
        if is_ready(base).await {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    false
}

/// A stop signal for a stage run in this process: the sender that stops it, and the shutdown
/// future to give the stage (done once the sender sends, or is dropped).
pub fn stop_signal() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

/// Asserts that `text` contains `needle`, showing `text` if not.
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{text}");
}

/// Asserts that `items` is empty; if not, fails saying how many `what` there are and showing
/// the first ten.
pub fn assert_none<T: std::fmt::Debug>(items: &[T], what: &str) {
    assert!(
        items.is_empty(),
        "{} {what}, e.g. {:?}",
        items.len(),
        &items[..items.len().min(10)]
    );
}

/// The seed of a randomized crash test: `CRASH_SEED` if set (to replay a run), else a random
/// one. Printed, so that a failing run can be replayed.
pub fn crash_seed() -> u64 {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed: CRASH_SEED={seed}");
    seed
}

/// Bootstrap servers of the local stack.
pub fn brokers() -> String {
    if let Some((b, _)) = STACK.get() {
        return b.clone();
    }
    std::env::var("INTAKE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Registry base URL of the local stack (Confluent API).
pub fn registry_url() -> String {
    if let Some((_, r)) = STACK.get() {
        return r.clone();
    }
    std::env::var("INTAKE_TEST_REGISTRY")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into())
}

/// A fresh random name fragment.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// The repository root.
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config for one test: random topic and group prefixes, real broker and registry, plus
/// whatever `extra` TOML (sources) the test adds.
pub fn config(extra: &str) -> Config {
    Config::from_toml(&config_text(extra)).expect("test config is valid")
}

/// The text of [`config`] (for child processes, which read it from a file).
pub fn config_text(extra: &str) -> String {
    config_text_over(&format!("brokers = \"{}\"", brokers()), extra)
}

/// [`config_text`] with `kafka` as the `[kafka]` table's connection lines (`brokers` and any
/// security settings; sub-tables such as `[kafka.tls]` last).
pub fn config_text_over(kafka: &str, extra: &str) -> String {
    config_text_with(kafka, &format!("url = \"{}\"", registry_url()), extra)
}

/// The API key of the serve client [`serve_client`] declares.
pub const SERVE_KEY: &str = "intake-test-serve-key";

/// A `[[serve.clients]]` entry allowed jobs and blobs for every source, with the key
/// [`SERVE_KEY`] (a literal: a test's own local config). Add it to the config of a test that
/// submits jobs or uploads blobs, and send its requests with [`serve_http`].
pub fn serve_client() -> String {
    format!(
        r#"
[[serve.clients]]
name = "tests"
key = "{SERVE_KEY}"
operations = ["jobs", "blobs"]
sources = ["*"]
"#
    )
}

/// A POST through `http` of the JSON `body` to serve's webhook endpoint of `source` at `base`,
/// signed now with `secret` (`X-Intake-Signature`), ready to send.
pub fn signed_webhook(
    http: &reqwest::Client,
    base: &str,
    source: &str,
    secret: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = intake::signing::sign(secret.as_bytes(), now, &body);
    http.post(format!("{base}/v1/webhooks/{source}"))
        .header("content-type", "application/json")
        .header("X-Intake-Signature", signature)
        .body(body)
}

/// An HTTP client builder whose requests carry `Authorization: Bearer` [`SERVE_KEY`].
pub fn serve_http_builder() -> reqwest::ClientBuilder {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {SERVE_KEY}")
            .parse()
            .expect("a header value"),
    );
    reqwest::Client::builder().default_headers(h)
}

/// [`serve_http_builder`], built.
pub fn serve_http() -> reqwest::Client {
    serve_http_builder().build().expect("an HTTP client")
}

/// The local stack's secured listeners, as `scripts/stack` made them: SASL_SSL (user
/// `intake`, PLAIN and SCRAM) on the plaintext port + 2, mTLS on + 3, and the CA, client
/// certificates and password files in `<stack dir>/tls` (`INTAKE_TEST_STACK_DIR`, default
/// `<repo>/.stack`).
pub struct SecureStack {
    pub sasl_ssl: String,
    pub mtls: String,
    pub tls: std::path::PathBuf,
}

pub fn secure_stack() -> SecureStack {
    let plain = brokers();
    let (host, port) = plain.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().expect("a port");
    let dir = std::env::var("INTAKE_TEST_STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root().join(".stack"));
    let tls = dir.join("tls");
    assert!(
        tls.join("ca.pem").exists(),
        "{} has no ca.pem: start the stack with scripts/stack start (it makes the certificates)",
        tls.display()
    );
    SecureStack {
        sasl_ssl: format!("{host}:{}", port + 2),
        mtls: format!("{host}:{}", port + 3),
        tls,
    }
}

impl SecureStack {
    /// `[registry]` lines for the registry behind the stack's HTTPS proxy (the plain port + 1)
    /// with basic auth and the stack's CA.
    pub fn registry_toml(&self) -> String {
        let plain = registry_url();
        let (head, path) = plain
            .strip_prefix("http://")
            .and_then(|r| r.split_once('/'))
            .expect("http://host:port/path");
        let (host, port) = head.rsplit_once(':').expect("host:port");
        let port: u16 = port.parse().expect("a port");
        format!(
            "url = \"https://{host}:{}/{path}\"\n\
             [registry.auth]\nkind = \"basic\"\nusername = \"registry-client\"\n\
             password = {{ file = \"{}\" }}\n\
             [registry.tls]\nca_file = \"{}\"",
            port + 1,
            self.tls.join("registry-client.password").display(),
            self.tls.join("ca.pem").display()
        )
    }

    /// `[kafka]` lines for SASL_SSL with OAUTHBEARER: tokens of Keycloak's client
    /// `intake-kafka` (client credentials, its secret from `secret_file`), the broker verified
    /// with the stack's CA.
    pub fn oauth_toml(&self, kc: &Keycloak, secret_file: &std::path::Path) -> String {
        format!(
            "brokers = \"{}\"\nsecurity_protocol = \"sasl_ssl\"\n\
             [kafka.tls]\nca_file = \"{}\"\n\
             [kafka.sasl]\nmechanism = \"OAUTHBEARER\"\ntoken_endpoint_url = \"{}\"\n\
             client_id = \"intake-kafka\"\nclient_secret = {{ file = \"{}\" }}",
            self.sasl_ssl,
            self.tls.join("ca.pem").display(),
            kc.token_url(),
            secret_file.display()
        )
    }

    /// `[registry]` lines for the registry that takes Keycloak tokens ([`Keycloak::registry_url`]):
    /// OAuth 2.0 client credentials of `intake-registry` (its secret from `secret_file`), the
    /// stack's CA.
    pub fn oidc_registry_toml(&self, kc: &Keycloak, secret_file: &std::path::Path) -> String {
        format!(
            "url = \"{}\"\n\
             [registry.auth]\nkind = \"oauth2\"\ngrant = \"client_credentials\"\n\
             token_url = \"{}\"\nclient_id = \"intake-registry\"\n\
             client_secret = {{ file = \"{}\" }}\n\
             [registry.tls]\nca_file = \"{}\"",
            kc.registry_url(),
            kc.token_url(),
            secret_file.display(),
            self.tls.join("ca.pem").display()
        )
    }

    /// `[kafka]` lines for SASL_SSL with `mechanism`, verifying the broker with the stack's CA.
    pub fn sasl_ssl_toml(&self, mechanism: &str) -> String {
        format!(
            "brokers = \"{}\"\nsecurity_protocol = \"sasl_ssl\"\n\
             [kafka.tls]\nca_file = \"{}\"\n\
             [kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"intake\"\n\
             password = {{ file = \"{}\" }}",
            self.sasl_ssl,
            self.tls.join("ca.pem").display(),
            self.tls.join("intake.password").display()
        )
    }
}

/// Runs the idempotent `scripts/stack start <service>` for the test stack's dir
/// (`INTAKE_TEST_STACK_DIR`, default `<repo>/.stack`) with `env` added, failing the test with
/// the script's output if it fails; returns that dir. Blocking.
pub fn stack_start(service: &str, env: &[(&str, String)]) -> std::path::PathBuf {
    stack_run(&["start", service], env)
}

/// Runs `scripts/stack <args…>` for the test stack's dir (`INTAKE_TEST_STACK_DIR`, default
/// `<repo>/.stack`) with `env` added, failing the test with the script's output if it fails;
/// returns that dir. Blocking.
pub fn stack_run(args: &[&str], env: &[(&str, String)]) -> std::path::PathBuf {
    let stack = std::env::var("INTAKE_TEST_STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root().join(".stack"));
    let mut cmd = std::process::Command::new(root().join("scripts/stack"));
    cmd.args(args).env("INTAKE_STACK_DIR", &stack);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/stack");
    assert!(
        out.status.success(),
        "scripts/stack {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stack
}

/// The local stack's Keycloak (realm `intake`), started on first use by the idempotent
/// `scripts/stack start keycloak` on `INTAKE_TEST_KEYCLOAK_PORT` (default 8180). That also
/// gives the stack's broker OAUTHBEARER on its SASL_SSL listener (restarting it once if it ran
/// without), so call this before a test's Kafka work. Blocking.
pub struct Keycloak {
    pub url: String,
    pub secrets: std::path::PathBuf,
}

pub fn keycloak() -> &'static Keycloak {
    static KEYCLOAK: std::sync::OnceLock<Keycloak> = std::sync::OnceLock::new();
    KEYCLOAK.get_or_init(|| {
        let port = std::env::var("INTAKE_TEST_KEYCLOAK_PORT").unwrap_or_else(|_| "8180".into());
        let stack = stack_start("keycloak", &[("KEYCLOAK_PORT", port.clone())]);
        Keycloak {
            url: format!("http://127.0.0.1:{port}"),
            secrets: stack.join("keycloak/secrets"),
        }
    })
}

impl Keycloak {
    pub fn issuer(&self) -> String {
        format!("{}/realms/intake", self.url)
    }
    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }
    pub fn secret_file(&self, name: &str) -> std::path::PathBuf {
        self.secrets.join(name)
    }
    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.secret_file(name))
            .unwrap()
            .trim()
            .to_owned()
    }
    /// The second registry `scripts/stack start keycloak` runs: HTTPS (the stack's CA), only
    /// Keycloak tokens for the audience `registry` (Keycloak's port + 4).
    pub fn registry_url(&self) -> String {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        format!("https://127.0.0.1:{}/apis/ccompat/v7", port + 4)
    }
    /// An access token of `client` (client credentials, its secret from `<client>.secret`).
    pub fn token(&self, client: &str) -> String {
        let url = self.token_url();
        let secret = self.secret(&format!("{client}.secret"));
        let client = client.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let r: serde_json::Value = reqwest::Client::new()
                    .post(url)
                    .basic_auth(client, Some(secret))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=client_credentials")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                r["access_token"].as_str().expect("a token").to_owned()
            })
        })
        .join()
        .unwrap()
    }
}

/// Splits TOML table lines into its own keys and the sub-tables that follow them.
fn keys_and_tables(toml: &str) -> (&str, &str) {
    match toml.find("\n[") {
        Some(i) => (&toml[..i], &toml[i + 1..]),
        None => (toml, ""),
    }
}

/// [`config_text_over`] with `registry` as the `[registry]` table's connection lines (`url`
/// and any `[registry.auth]`/`[registry.tls]` sub-tables, last).
pub fn config_text_with(kafka: &str, registry: &str, extra: &str) -> String {
    let p = unique("t");
    let root = root();
    let (keys, tables) = keys_and_tables(kafka);
    let (registry, registry_tables) = keys_and_tables(registry);
    let text = format!(
        r#"
[kafka]
{keys}
group_prefix = "{p}"
instance_id = "test"
transaction_timeout = "10s"
{tables}

[registry]
{registry}
schema_dir = "{root}/topics/schemas"
cache_ttl = "1s"
{registry_tables}

[blob]
url = "file://{blobs}"

[topics]
prefix = "{p}"
dir = "{root}/topics"

{extra}
"#,
        root = root.display(),
        blobs = test_tmp().join(format!("intake-blobs-{p}")).display(),
    );
    text
}

/// Where tests keep files (blob stores, state directories): cargo's per-target scratch
/// directory, so they stay under `target/` instead of piling up in /tmp; `scripts/test` empties
/// it before each run.
pub fn test_tmp() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Kafka factory for a config.
pub fn kafka(cfg: &Config) -> Kafka {
    Kafka::new(&cfg.kafka).unwrap()
}

/// A fresh test config without sources, its topics applied: the landing topic's name and a
/// Kafka client for it.
pub async fn fresh_landing() -> (String, Kafka) {
    let cfg = config("");
    apply_topics(&cfg).await;
    (
        intake::topics::TopicNames::from_config(&cfg).landing(),
        kafka(&cfg),
    )
}

/// A transactional producer with the transactional id `id`, initialised, its first
/// transaction begun.
pub fn begun_producer(k: &Kafka, id: &str) -> intake::kafka::TxnProducer {
    let p = k.txn_producer(id).unwrap();
    p.init().unwrap();
    p.begin().unwrap();
    p
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).unwrap()
    }
}

/// A consumer of the cluster at `bootstrap` in a fresh group named from `group`, reading from
/// the beginning at the given isolation level, nothing committed, partition ends reported.
pub fn eof_consumer(bootstrap: &str, group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique(group))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

/// Reads a whole topic to its end with the given isolation level (`read_committed` or
/// `read_uncommitted`).
pub fn read_all(topic: &str, isolation: &str) -> Vec<Rec> {
    read_all_from(
        &brokers(),
        topic,
        isolation,
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
}

/// [`read_all`] from the cluster at `bootstrap`, waiting up to `metadata_wait` for the topic's
/// metadata and up to `read_wait` to reach its end.
pub fn read_all_from(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    metadata_wait: Duration,
    read_wait: Duration,
) -> Vec<Rec> {
    let c = eof_consumer(bootstrap, "reader", isolation);
    let md = c.fetch_metadata(Some(topic), metadata_wait).unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    assert!(parts > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut pending: std::collections::HashSet<i32> = (0..parts).collect();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + read_wait;
    while !pending.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            // librdkafka's notices that its connections dropped (a broker busy deleting the
            // topics of earlier runs, a restart): it reconnects by itself, within the deadline.
            Some(Err(KafkaError::MessageConsumption(
                code @ (rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure),
            ))) => eprintln!("reading {topic}: {code}; the client reconnects"),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    out
}

/// `(intake.kind, intake.stream)` of every committed record of the landing topic of `cfg`, read
/// with intake's own reader: to the last stable offset as it stood when the read began, so it
/// returns while producers keep appending (which [`read_all`], waiting for the end of each
/// partition, may not until they stop).
pub fn landed_kinds(cfg: &Config) -> Vec<(Option<String>, Option<String>)> {
    use rdkafka::Message;
    let kafka = intake::kafka::Kafka::new(&cfg.kafka).unwrap();
    let reader = kafka.reader_consumer("test").unwrap();
    let landing = intake::topics::TopicNames::from_config(cfg).landing();
    let mut out = Vec::new();
    intake::kafka::reader::read_topic(&reader, &landing, std::time::Duration::from_secs(60), |m| {
        let h = m.headers();
        out.push((
            intake::headers::get_str(h, intake::headers::KIND).map(str::to_owned),
            intake::headers::get_str(h, intake::headers::STREAM).map(str::to_owned),
        ));
    })
    .unwrap();
    out
}

/// Every committed record of the landing topic of `cfg`.
pub fn read_landing(cfg: &Config) -> Vec<Rec> {
    read_all(
        &intake::topics::TopicNames::from_config(cfg).landing(),
        "read_committed",
    )
}

/// Reads every committed record of `topics`, by topic.
pub async fn read_topics(topics: &[String]) -> std::collections::BTreeMap<String, Vec<Rec>> {
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        topics
            .iter()
            .map(|t| (t.clone(), read_all(t, "read_committed")))
            .collect()
    })
    .await
    .unwrap()
}

/// How long [`validate_until`] waits for its outputs.
pub const VALIDATE_WAIT: Duration = Duration::from_secs(120);

/// Runs validate in-process until `done` holds for the committed contents of `outputs`, then
/// stops it (which commits and leaves the group) and returns their final contents. Fails the
/// test, naming `what` and the counts so far, if validate stops by itself or `done` does not
/// hold within [`VALIDATE_WAIT`].
pub async fn validate_until(
    cfg: &std::sync::Arc<Config>,
    outputs: &[String],
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, Vec<Rec>>) -> bool,
) -> std::collections::BTreeMap<String, Vec<Rec>> {
    let (stop, stopped) = stop_signal();
    let task = tokio::spawn(intake::validate::stage::run(cfg.clone(), stopped));
    let deadline = std::time::Instant::now() + VALIDATE_WAIT;
    loop {
        let out = read_topics(outputs).await;
        if done(&out) {
            break;
        }
        assert!(!task.is_finished(), "validate stopped: {:?}", task.await);
        assert!(
            std::time::Instant::now() < deadline,
            "validate did not reach {what} in {VALIDATE_WAIT:?}: {:?}",
            out.iter().map(|(t, r)| (t, r.len())).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().expect("validate stops cleanly");
    read_topics(outputs).await
}

/// [`validate_until`] with dedup running in this process beside validate, so `outputs` may be
/// curated topics; dedup is stopped (and must stop cleanly within a minute) before the final
/// contents are returned.
pub async fn curate_until(
    cfg: &std::sync::Arc<Config>,
    outputs: &[String],
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, Vec<Rec>>) -> bool,
) -> std::collections::BTreeMap<String, Vec<Rec>> {
    let (stop, stopped) = stop_signal();
    let dedup = tokio::spawn(intake::dedup::stage::run(cfg.clone(), stopped));
    let out = validate_until(cfg, outputs, what, done).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), dedup)
        .await
        .expect("dedup stops")
        .unwrap()
        .unwrap();
    out
}

/// Asserts that the committed DLQ of `cfg` is empty, naming what is in it otherwise.
pub fn assert_no_dead_letters(cfg: &Config) {
    let dlq = read_all(
        &intake::topics::TopicNames::from_config(cfg).dlq(),
        "read_committed",
    );
    assert!(
        dlq.is_empty(),
        "dead letters: {:?}",
        dlq.iter()
            .map(|r| r.header("dlq.error.detail"))
            .collect::<Vec<_>>()
    );
}

/// The field each drift kind of the simulator breaks, per stream.
pub fn drift_field(stream: &str, kind: &str) -> &'static str {
    match (stream, kind) {
        ("customers", "unknown_enum") => "status",
        ("customers", "unknown_field") => "loyalty_tier",
        ("customers", "type_mismatch" | "missing_field") => "email",
        ("orders", "unknown_enum") => "status",
        ("orders", "unknown_field") => "fulfillment_channel",
        ("orders", "type_mismatch") => "amount_cents",
        ("orders", "missing_field") => "currency",
        ("events", "unknown_enum" | "type_mismatch") => "type",
        ("events", "unknown_field") => "source",
        ("events", "missing_field") => "entity_id",
        other => panic!("no drift field for {other:?}"),
    }
}

/// Creates the configured topics (fails the test on error).
pub async fn apply_topics(cfg: &Config) {
    intake::topics::ensure(cfg, &kafka(cfg))
        .await
        .expect("topics apply");
}

/// [`apply_topics`], then registers the schemas of every configured stream (a registry that
/// blinks is retried, as `intake schema apply` does; anything else fails the test); returns
/// the registry client that registered them.
pub async fn apply_topics_and_schemas(cfg: &Config) -> intake::registry::Registry {
    apply_topics(cfg).await;
    let reg = intake::registry::Registry::new(&cfg.registry).unwrap();
    registry_retrying("schemas apply", || {
        intake::registry::apply_schemas(cfg, &reg)
    })
    .await;
    reg
}

/// `fetch --once` in this process: every stream of `cfg` synced to its current end.
pub async fn fetch_once(
    cfg: &std::sync::Arc<Config>,
) -> Result<intake::fetch::FetchReport, intake::fetch::FetchError> {
    intake::fetch::run(
        cfg.clone(),
        intake::fetch::FetchOptions {
            once: true,
            ..intake::fetch::FetchOptions::default()
        },
        std::future::pending(),
    )
    .await
}

/// Lands records `(key, value, headers)` straight into the landing topic, in one transaction.
pub async fn land<V: Into<Option<Vec<u8>>>>(
    cfg: &Config,
    records: Vec<(String, V, intake::headers::Headers)>,
) {
    let records: Vec<(String, Option<Vec<u8>>, intake::headers::Headers)> = records
        .into_iter()
        .map(|(key, value, h)| (key, value.into(), h))
        .collect();
    let topic = intake::topics::TopicNames::from_config(cfg).landing();
    let producer = kafka(cfg).txn_producer(&unique("test-lander-")).unwrap();
    producer
        .blocking(move |p| {
            p.init()?;
            p.begin()?;
            for (key, value, h) in records {
                p.send(intake::kafka::Outgoing {
                    topic: &topic,
                    key: Some(key.as_bytes()),
                    payload: value.as_deref(),
                    headers: h.build(),
                    partition: None,
                })?;
            }
            p.commit()
        })
        .await
        .unwrap();
}

/// `dlq replay` of the dead letters `filter` matches, under a replay id of its own.
pub async fn replay_filtered(
    cfg: &Config,
    filter: intake::dlq::Filter,
) -> anyhow::Result<intake::dlq::replay::ReplayReport> {
    intake::dlq::replay::run(
        cfg,
        intake::dlq::replay::Options {
            filter,
            ..intake::dlq::replay::Options::default()
        },
    )
    .await
}

/// [`replay_filtered`] of the dead letters of one drift `kind`.
pub async fn replay_kind(
    cfg: &Config,
    kind: &str,
) -> anyhow::Result<intake::dlq::replay::ReplayReport> {
    replay_filtered(
        cfg,
        intake::dlq::Filter {
            kind: Some(kind.into()),
            ..intake::dlq::Filter::default()
        },
    )
    .await
}

/// Starts an in-process simulator with token `demo` (quota 1 000 000/s unless overridden)
/// and no background writes unless `--write-rate` is given.
/// A registry call of a test's set-up, repeated while the registry is unavailable (a pooled
/// connection a proxy closed a moment before, a registry still loading), for up to 30 s; any
/// other error, or one that lasts, fails the test with `what`.
pub async fn registry_retrying<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, intake::registry::RegistryError>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

pub async fn sim(flags: &[&str]) -> intake::sim::SimHandle {
    let mut argv = vec!["sim"];
    if !flags.contains(&"--token") {
        argv.extend(["--token", "demo=1000000"]);
    }
    if !flags.contains(&"--write-rate") {
        argv.extend(["--write-rate", "0"]);
    }
    argv.extend_from_slice(flags);
    intake::sim::spawn(intake::sim::SimArgs::try_parse_from(argv).expect("sim flags"))
        .await
        .expect("sim starts")
}

/// The simulator's ground truth.
pub async fn truth(sim: &intake::sim::SimHandle) -> serde_json::Value {
    sim_get(sim, "/admin/truth").await
}

/// The simulator's counters (`/admin/stats`): requests and pages served, per-token quota
/// counts, webhook deliveries.
pub async fn sim_stats(sim: &intake::sim::SimHandle) -> serde_json::Value {
    sim_get(sim, "/admin/stats").await
}

/// GETs a simulator admin endpoint, as JSON ([`sim_admin`] POSTs).
pub async fn sim_get(sim: &intake::sim::SimHandle, path: &str) -> serde_json::Value {
    reqwest::get(sim.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `(stream, id) -> drift kind` of the drifted records of `streams` in the truth.
pub fn truth_drifted(
    truth: &serde_json::Value,
    streams: &[&str],
) -> std::collections::BTreeMap<(String, String), String> {
    streams
        .iter()
        .flat_map(|s| {
            truth["streams"][s]["drifted"]
                .as_object()
                .unwrap()
                .iter()
                .map(move |(id, k)| ((s.to_string(), id.clone()), k.as_str().unwrap().to_owned()))
        })
        .collect()
}

/// The `(stream, id)` pairs the truth lists under `field` for each of `streams`: the keys of an
/// object (`live`) or the strings of an array (`large`).
pub fn truth_ids(
    truth: &serde_json::Value,
    streams: &[&str],
    field: &str,
) -> std::collections::BTreeSet<(String, String)> {
    let mut ids = std::collections::BTreeSet::new();
    for s in streams {
        let listed = &truth["streams"][s][field];
        let of_stream: Vec<String> = match listed.as_object() {
            Some(o) => o.keys().cloned().collect(),
            None => listed
                .as_array()
                .unwrap_or_else(|| panic!("{s}: no {field} in the truth"))
                .iter()
                .map(|id| id.as_str().unwrap().to_owned())
                .collect(),
        };
        ids.extend(of_stream.into_iter().map(|id| (s.to_string(), id)));
    }
    ids
}

/// The drifted `(stream, id)` pairs (of [`truth_drifted`]) that are still `live`: the records
/// validate is to dead-letter.
pub fn live_drifted(
    drifted: &std::collections::BTreeMap<(String, String), String>,
    live: &std::collections::BTreeSet<(String, String)>,
) -> std::collections::BTreeSet<(String, String)> {
    drifted
        .keys()
        .filter(|k| live.contains(*k))
        .cloned()
        .collect()
}

/// Asserts that the seed renamed an enum value in each of `streams`: `enum_ids` (the records
/// drifted that way) hold an id of every one.
pub fn assert_enum_drift_in_every_stream(
    streams: &[&str],
    enum_ids: &std::collections::BTreeSet<(String, String)>,
) {
    assert!(
        streams
            .iter()
            .all(|s| enum_ids.iter().any(|(st, _)| st == s)),
        "the seed renames an enum value in every stream: {enum_ids:?}"
    );
}

/// `id -> version` of the live records of a stream in the truth.
pub fn truth_versions(
    truth: &serde_json::Value,
    stream: &str,
) -> std::collections::BTreeMap<String, u64> {
    truth["streams"][stream]["live"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, v)| (id.clone(), v["version"].as_u64().unwrap()))
        .collect()
}

/// POSTs to a simulator admin endpoint.
pub async fn sim_admin(sim: &intake::sim::SimHandle, path: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(sim.url(path))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// The `[[sources]]` lines of [`sim_source`] (its streams to follow): source `sim` on the
/// simulator, token `demo`, up to 20 retries.
pub fn sim_source_head(sim: &intake::sim::SimHandle) -> String {
    sim_bearer_source_head(sim, "max_retries = 20")
}

/// The `[[sources]]` lines of source `sim` on the simulator with the bearer token `demo`, plus
/// any `extra` lines; its streams follow.
pub fn sim_bearer_source_head(sim: &intake::sim::SimHandle, extra: &str) -> String {
    bearer_source_head("sim", sim.addr, "demo", extra)
}

/// The `[[sources]]` lines of source `name` at `http://<addr>` with the bearer `token`, plus
/// any `extra` lines; its streams follow.
pub fn bearer_source_head(
    name: &str,
    addr: std::net::SocketAddr,
    token: &str,
    extra: &str,
) -> String {
    source_head(
        name,
        &format!(
            "base_url = \"http://{addr}\"\nauth = {{ kind = \"bearer\", token = \"{token}\" }}\n{extra}"
        ),
    )
}

/// A source block for the simulator with the given streams `(name, path, pagination)`.
pub fn sim_source(
    sim: &intake::sim::SimHandle,
    streams: &[(&str, &str, &str)],
    extra: &str,
) -> String {
    let mut s = sim_source_head(sim);
    for (name, path, pagination) in streams {
        s.push_str(&sim_stream(name, path, pagination, 50, extra));
    }
    s
}

/// A `[[sources.streams]]` table: stream `name` at `path` (of the simulator or another test
/// upstream), paginated in `style` (see [`pagination_toml`]), `page_size` records a page, keyed
/// by `/id`, versioned by `/version`, with any `extra` lines.
pub fn sim_stream(name: &str, path: &str, style: &str, page_size: u32, extra: &str) -> String {
    format!(
        r#"
[[sources.streams]]
name = "{name}"
path = "{path}"
primary_key = "/id"
version = "/version"
pagination = {pagination}
page_size = {page_size}
{extra}
"#,
        pagination = pagination_toml(style)
    )
}

/// [`sim_source`] with each of `streams` on the simulator's cursor-paginated path
/// (`/v1/styles/cursor/<stream>`).
pub fn cursor_sim_source(sim: &intake::sim::SimHandle, streams: &[&str]) -> String {
    let paths: Vec<(String, String)> = streams
        .iter()
        .map(|s| (s.to_string(), format!("/v1/styles/cursor/{s}")))
        .collect();
    let refs: Vec<(&str, &str, &str)> = paths
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_str(), "cursor"))
        .collect();
    sim_source(sim, &refs, "")
}

/// A `[[sources.streams]]` table: stream `name`, keyed by `/id`, versioned by `/version`, with
/// any `extra` lines.
pub fn keyed_stream(name: &str, extra: &str) -> String {
    versioned_stream(name, "/version", extra)
}

/// A `[[sources.streams]]` table: stream `name`, keyed by `/id`, versioned by the pointer
/// `version`, with any `extra` lines.
pub fn versioned_stream(name: &str, version: &str, extra: &str) -> String {
    format!(
        r#"
[[sources.streams]]
name = "{name}"
primary_key = "/id"
version = "{version}"
{extra}"#
    )
}

/// The `[[sources]]` table's own lines: source `name` with any `extra` lines (base URL, auth,
/// ...); its `[[sources.streams]]` follow.
pub fn source_head(name: &str, extra: &str) -> String {
    format!("\n[[sources]]\nname = \"{name}\"\n{extra}\n")
}

/// A `[[sources]]` table ([`source_head`] of `name` and `extra`), then a [`keyed_stream`] per
/// `(stream name, extra stream lines)`.
pub fn keyed_source(name: &str, extra: &str, streams: &[(&str, &str)]) -> String {
    let mut s = source_head(name, extra);
    for (stream, stream_extra) in streams {
        s.push_str(&keyed_stream(stream, stream_extra));
    }
    s
}

/// The `base_url` line of a source nobody fetches: nothing listens there, so connections are
/// refused (the test lands its records itself).
pub const UNFETCHED_BASE_URL: &str = r#"base_url = "http://127.0.0.1:9""#;

/// A source `sim` nobody fetches (see [`UNFETCHED_BASE_URL`]), with a [`keyed_stream`] per
/// `(name, extra lines)`.
pub fn unfetched_source(streams: &[(&str, &str)]) -> String {
    keyed_source("sim", UNFETCHED_BASE_URL, streams)
}

/// A webhook source `shop` (deliveries signed with any of `secrets`) with a [`keyed_stream`] per
/// name in `streams`, and the serve client of [`serve_client`].
pub fn shop_source(secrets: &[&str], streams: &[&str]) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    let mut s = format!(
        "\n[[sources]]\nname = \"shop\"\nwebhook = {{ secrets = [{}] }}\n",
        secrets.join(", ")
    );
    for name in streams {
        s.push_str(&keyed_stream(name, ""));
    }
    s + &serve_client()
}

/// The `pagination` table of a style: the simulator's `link` and `next_url` styles take their
/// page size in `limit`, which intake sends only when `size_param` names it.
pub fn pagination_toml(style: &str) -> String {
    if style == "link" {
        r#"{ style = "link", size_param = "limit" }"#.to_owned()
    } else if style == "next_url" {
        r#"{ style = "next_url", pointer = "/links/next", size_param = "limit" }"#.to_owned()
    } else {
        format!(r#"{{ style = "{style}" }}"#)
    }
}

/// A landed page, parsed.
#[derive(Debug, Clone)]
pub struct Page {
    pub stream: String,
    pub kind: String,
    pub sync_id: String,
    pub seq: u64,
    /// (id, version) of every record in the page.
    pub records: Vec<(String, u64)>,
}

/// Every page and blob-ref of the committed landing topic, with blob-refs resolved.
pub async fn landed_pages(cfg: &Config) -> Vec<Page> {
    let topic = intake::topics::TopicNames::from_config(cfg).landing();
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let mut out = Vec::new();
    for r in read_all(&topic, "read_committed") {
        let kind = r.header("intake.kind").unwrap().to_owned();
        if kind != "page" && kind != "blob-ref" {
            continue;
        }
        let body: Vec<u8> = if kind == "blob-ref" {
            let b = intake::blob::BlobRef::parse_header(r.header("intake.blob").unwrap()).unwrap();
            blobs.get(&b).await.unwrap().to_vec()
        } else {
            r.value.clone().unwrap()
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let records = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["id"].as_str().unwrap().to_owned(),
                    x["version"].as_u64().unwrap(),
                )
            })
            .collect();
        out.push(Page {
            stream: r.header("intake.stream").unwrap().to_owned(),
            kind,
            sync_id: r.header("intake.sync_id").unwrap().to_owned(),
            seq: r.header("intake.seq").unwrap().parse().unwrap(),
            records,
        });
    }
    out
}

/// Asserts that no (sync, seq) page landed twice and that every sync's pages are contiguous
/// from 0 (a gap would mean a cursor moved past data that was not committed).
pub fn assert_pages_unique_and_contiguous(pages: &[Page]) {
    let mut by_sync: std::collections::BTreeMap<(&str, &str), Vec<u64>> = Default::default();
    for p in pages {
        by_sync
            .entry((&p.stream, &p.sync_id))
            .or_default()
            .push(p.seq);
    }
    for ((stream, sync), mut seqs) in by_sync {
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        let mut dedup = seqs.clone();
        dedup.dedup();
        assert_eq!(
            dedup.len(),
            seqs.len(),
            "{stream} sync {sync}: a page landed twice: {seqs:?}"
        );
        assert_eq!(
            seqs,
            (0..n).collect::<Vec<_>>(),
            "{stream} sync {sync}: pages not contiguous"
        );
    }
}

/// Writes a config to a temp file for a child process (returns the path; keep the dir alive).
pub fn write_config(dir: &std::path::Path, cfg_text: &str) -> std::path::PathBuf {
    let p = dir.join("intake.toml");
    std::fs::write(&p, cfg_text).unwrap();
    p
}

/// A config `text` for a test that also runs `intake` processes: parsed, and written (by
/// [`write_config`]) to a fresh directory. The config, the directory (keep it while the test
/// runs) and the file's path.
pub fn config_with_file(
    text: &str,
) -> (
    std::sync::Arc<Config>,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), text);
    let cfg = Config::from_toml(text).expect("test config is valid");
    (std::sync::Arc::new(cfg), dir, path)
}

/// One sync of drifted records, for the DLQ and reprocessing tests: a simulator of `records`
/// records a stream (seed 11, 5 % of them drifted), one cursor source of its `streams` (config
/// written by [`config_with_file`]), topics and schemas applied, and [`fetch_once`] run. The
/// simulator, what [`config_with_file`] returns, the topic names and the registry client.
pub async fn land_drifted_sync(
    records: &str,
    streams: &[&str],
) -> (
    intake::sim::SimHandle,
    std::sync::Arc<Config>,
    tempfile::TempDir,
    std::path::PathBuf,
    intake::topics::TopicNames,
    intake::registry::Registry,
) {
    let sim = sim(&["--records", records, "--seed", "11", "--drift-rate", "0.05"]).await;
    let text = config_text(&cursor_sim_source(&sim, streams));
    let (cfg, dir, config_file) = config_with_file(&text);
    let names = intake::topics::TopicNames::from_config(&cfg);
    let reg = apply_topics_and_schemas(&cfg).await;
    fetch_once(&cfg).await.unwrap();
    (sim, cfg, dir, config_file, names, reg)
}

/// Every version of a registry subject as (version, schema id, schema text), asked of the
/// registry's Confluent API over plain HTTP (not through intake's client), as a downstream
/// tool would; empty when the subject does not exist.
pub async fn subject_versions(subject: &str) -> Vec<(u32, u32, String)> {
    let http = reqwest::Client::new();
    let base = registry_url();
    let r = http
        .get(format!("{base}/subjects/{subject}/versions"))
        .send()
        .await
        .unwrap();
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Vec::new();
    }
    assert!(r.status().is_success(), "{subject}: {}", r.status());
    let versions: Vec<u32> = r.json().await.unwrap();
    let mut out = Vec::new();
    for v in versions {
        let body = get_json(&http, &format!("{base}/subjects/{subject}/versions/{v}")).await;
        out.push((
            v,
            u32::try_from(body["id"].as_u64().unwrap()).unwrap(),
            body["schema"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// `intake serve` running in this process on a free port, ready (Kafka transactions work).
pub struct Serve {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), intake::serve::ServeError>>,
}

impl Serve {
    /// Starts serve and waits until `/readyz` answers 200 (failing the test, with serve's
    /// error if it stopped, after two minutes).
    pub async fn start(cfg: std::sync::Arc<Config>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = stop_signal();
        let task = tokio::spawn(intake::serve::run(cfg, listener, rx));
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if is_ready(&base).await {
                return Self {
                    base,
                    stop: Some(tx),
                    task,
                };
            }
            assert!(!task.is_finished(), "serve stopped: {:?}", task.await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("serve never became ready");
    }

    /// Stops serve (it finishes in-flight transactions) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `(stream, id)` → how many data records (not sync markers) of it the valid topics of
/// `streams` (source `sim`) hold in `out`.
pub fn valid_ids(
    out: &std::collections::BTreeMap<String, Vec<Rec>>,
    names: &intake::topics::TopicNames,
    streams: &[&str],
) -> std::collections::BTreeMap<(String, String), usize> {
    let mut ids = std::collections::BTreeMap::new();
    for s in streams {
        for r in &out[&names.valid("sim", s)] {
            if r.header(intake::headers::KIND).is_none() {
                *ids.entry((s.to_string(), r.key_str().to_owned()))
                    .or_default() += 1;
            }
        }
    }
    ids
}

/// Runs the `intake` binary with `ARGS --config CONFIG` and `env` (logs at `warn`): whether it
/// succeeded, and its stdout, then its stderr.
pub async fn intake_cli_status(
    args: &[&str],
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
