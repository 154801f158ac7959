//! Issue 17: secured Kafka connections against the local stack's real SASL_SSL and mTLS
//! listeners (`scripts/stack` makes the CA, certificates and SCRAM user at its first start).
//!
//! - Each way to connect that a managed Kafka offers works: SASL_SSL with PLAIN,
//!   SCRAM-SHA-256 and SCRAM-SHA-512, and SSL with a client certificate — judged by
//!   `intake config --check` reaching the cluster and by `intake topics apply` creating topics
//!   that Kafka's own metadata (read over the plaintext listener) then lists.
//! - Each misconfiguration ends a stage's start-up within 30 s with one error naming the
//!   setting to fix — a wrong password (PLAIN and SCRAM), a CA that did not sign the broker's
//!   certificate, no client certificate or an expired one at the mTLS listener — and with the
//!   password nowhere in its output. (A plaintext client at a TLS listener is not recognised:
//!   librdkafka reports only "all brokers down", so the stage keeps waiting with a warning.)
//!
//! - The registry behind the stack's HTTPS proxy (Debian's nginx, basic auth) is reached with
//!   `registry.auth` and `registry.tls`; a wrong password, no credentials and an untrusted CA
//!   each end `intake validate`'s start-up naming the setting, the password nowhere in the output.
//! - fetch follows redirects and sends credentials (an API key in a custom header, a bearer
//!   token) only to the origin it asked: a second local server that records every header it
//!   receives gets none, the page it serves lands, and a redirect loop ends in a clear error.
//!
//! - OAUTHBEARER with tokens from the stack's Keycloak (client credentials), checked by the
//!   broker's own OIDC validation: it reaches the cluster; a wrong client secret and a token
//!   of a client the broker's audience check refuses each end start-up naming the setting.
//!
//! - The registry that takes only Keycloak tokens (a second Apicurio with its own OIDC
//!   support): OAuth 2.0 client credentials register the schemas; a wrong client secret and a
//!   token without the registry's audience each end start-up naming the setting.
//!
//! The whole pipeline over SASL_SSL with SCRAM-SHA-512, and with OAUTHBEARER, is
//! `tests/pipeline.rs`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// A config whose `[kafka]` connects with `kafka` (connection lines and sub-tables).
fn write(dir: &Path, name: &str, kafka: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, config_text_over(kafka, "")).unwrap();
    p
}

/// `[kafka]` lines for the mTLS listener with the given client certificate (or none).
fn mtls_toml(s: &SecureStack, cert: Option<&str>) -> String {
    let mut t = format!(
        "brokers = \"{}\"\nsecurity_protocol = \"ssl\"\n[kafka.tls]\nca_file = \"{}\"\n",
        s.mtls,
        s.tls.join("ca.pem").display()
    );
    if let Some(c) = cert {
        t.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            s.tls.join(format!("{c}.pem")).display(),
            s.tls.join(format!("{c}.key")).display()
        ));
    }
    t
}

/// Starts `intake validate` with `config`, which must refuse to start within 30 s with exactly
/// one error line containing `error` and naming `field`, and `secret` nowhere in its output.
/// Returns a line for the report.
fn refused_start(
    name: &str,
    config: &Path,
    log: &Path,
    error: &str,
    field: &str,
    secret: &str,
) -> String {
    let started = Instant::now();
    let (status, out) = proc::intake(&["validate"], log)
        .config(config)
        .capture_stdout()
        .spawn()
        .wait_output(Duration::from_secs(30));
    let took = started.elapsed();
    let text = format!("{out}{}", std::fs::read_to_string(log).unwrap_or_default());
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(error)).collect();
    assert!(!status.success(), "{name}: validate started: {text}");
    assert!(
        lines.len() == 1 && lines[0].contains(&format!("`{field}`")),
        "{name}: expected one error line naming `{field}`, got:\n{text}"
    );
    assert!(
        !text.contains(secret),
        "{name}: the secret is in the output"
    );
    format!("{name}: {:.1} s: {}", took.as_secs_f64(), lines[0])
}

/// `intake validate` with `kafka` as its `[kafka]` lines (a config in `dir` named `name`) must
/// not start — nor retry forever: [`refused_start`] with Kafka's connection error.
fn kafka_refused(dir: &Path, name: &str, kafka: &str, field: &str, secret: &str) -> String {
    let cfg_path = write(dir, name, kafka);
    let log = dir.join(format!("{name}.log"));
    refused_start(
        name,
        &cfg_path,
        &log,
        "cannot connect to Kafka",
        field,
        secret,
    )
}

/// A config in `dir` named `name` whose Kafka is the stack's plaintext listener and whose
/// `[registry]` is `registry`, with `extra` after them: its path and its text.
fn write_over_plain_kafka(
    dir: &Path,
    name: &str,
    registry: &str,
    extra: &str,
) -> (std::path::PathBuf, String) {
    let plain_kafka = format!("brokers = \"{}\"", brokers());
    let text = config_text_with(&plain_kafka, registry, extra);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// `intake validate` with `registry` as its `[registry]` lines (over the plaintext cluster, a
/// config in `dir` named `name`) must not start: [`refused_start`] with the registry's error.
fn registry_refused(dir: &Path, name: &str, registry: &str, field: &str, secret: &str) -> String {
    let (path, _) = write_over_plain_kafka(dir, name, registry, "");
    let log = dir.join(format!("{name}.log"));
    refused_start(name, &path, &log, "schema registry at", field, secret)
}

/// Runs `intake <args>` with `config` (logging to `log`), which must succeed within 60 s with
/// `want` in its standard output.
fn succeeds_saying(args: &[&str], config: &Path, log: &Path, want: &str) {
    let (status, out) = proc::intake(args, log)
        .config(config)
        .capture_stdout()
        .spawn()
        .wait_output(Duration::from_secs(60));
    assert!(
        status.success() && out.contains(want),
        "{args:?}: {status}\n{out}\n{}",
        proc::tail(log, 20)
    );
}

/// A connection whose OAuth 2.0 (client credentials) misconfigurations the tests try.
#[derive(Clone, Copy)]
enum Conn {
    /// Kafka over SASL_SSL with OAUTHBEARER, tokens checked by the broker.
    Kafka,
    /// The registry that takes only Keycloak tokens.
    Registry,
}

impl Conn {
    /// Its OAuth client, and another Keycloak client whose tokens lack its audience.
    fn clients(self) -> (&'static str, &'static str) {
        match self {
            Conn::Kafka => ("intake-kafka", "intake-fetch"),
            Conn::Registry => ("intake-registry", "intake-kafka"),
        }
    }

    /// Its config lines as its own client, the client secret read from `secret_file`.
    fn oauth_lines(self, kc: &Keycloak, s: &SecureStack, secret_file: &Path) -> String {
        match self {
            Conn::Kafka => s.oauth_toml(kc, secret_file),
            Conn::Registry => s.oidc_registry_toml(kc, secret_file),
        }
    }

    /// Its misconfiguration `name` with config lines `lines` must not start, naming `field`,
    /// `secret` nowhere ([`kafka_refused`], [`registry_refused`]).
    fn refused(self, dir: &Path, name: &str, lines: &str, field: &str, secret: &str) -> String {
        match self {
            Conn::Kafka => kafka_refused(dir, name, lines, field, secret),
            Conn::Registry => registry_refused(dir, name, lines, field, secret),
        }
    }

    /// Its two OAuth misconfigurations, each [`Conn::refused`]: a wrong client secret
    /// (Keycloak refuses the grant; named `<setting>.client_secret`) and a valid Keycloak
    /// token of the other client, whose audience it does not take (named
    /// `<setting>.client_id`). Returns the report lines.
    fn oauth_refusals(self, kc: &Keycloak, s: &SecureStack, dir: &Path) -> Vec<String> {
        let (client, other) = self.clients();
        let (case, setting) = match self {
            Conn::Kafka => ("oauth", "kafka.sasl"),
            Conn::Registry => ("registry-oauth", "registry.auth"),
        };
        let wrong = dir.join("wrong-secret");
        std::fs::write(&wrong, "not-the-client-secret").unwrap();
        let secret_of = |c: &str| format!("{c}.secret");
        [
            (
                format!("{case}-wrong-client-secret"),
                self.oauth_lines(kc, s, &wrong),
                format!("{setting}.client_secret"),
                kc.secret(&secret_of(client)),
            ),
            (
                format!("{case}-token-for-another-audience"),
                self.oauth_lines(kc, s, &kc.secret_file(&secret_of(other)))
                    .replace(&format!("\"{client}\""), &format!("\"{other}\"")),
                format!("{setting}.client_id"),
                kc.secret(&secret_of(other)),
            ),
        ]
        .into_iter()
        .map(|(name, lines, field, secret)| self.refused(dir, &name, &lines, &field, &secret))
        .collect()
    }
}

/// The stack's Keycloak and TLS material, and a fresh directory for a test's configs and logs.
fn keycloak_stack() -> (&'static Keycloak, SecureStack, tempfile::TempDir) {
    (keycloak(), secure_stack(), tempfile::tempdir().unwrap())
}

fn password(s: &SecureStack) -> String {
    std::fs::read_to_string(s.tls.join("intake.password"))
        .unwrap()
        .trim()
        .to_owned()
}

/// `config` (in `dir`, named `name`) reaches the cluster: `intake config --check` says `kafka:
/// ok` with `how`, and `intake topics apply` creates the landing topic, which Kafka then lists
/// over the plaintext listener. Returns a line for the report.
fn reaches_the_cluster(dir: &Path, name: &str, kafka: &str, how: &str) -> String {
    let cfg_path = write(dir, &name.replace('-', "_"), kafka);
    let log = dir.join(format!("{name}.log"));
    let (status, out) = proc::intake(&["config", "--check"], &log)
        .config(&cfg_path)
        .capture_stdout()
        .spawn()
        .wait_output(Duration::from_secs(60));
    assert!(
        status.success() && out.contains("kafka: ok") && out.contains(how),
        "{name}: {status}\n{out}\n{}",
        proc::tail(&log, 20)
    );
    // Topics created over the secured connection, seen by Kafka over the plaintext one.
    let cfg = intake::config::Config::load(&cfg_path).unwrap();
    let (status, out) = proc::intake(&["topics", "apply"], &log)
        .config(&cfg_path)
        .capture_stdout()
        .spawn()
        .wait_output(Duration::from_secs(120));
    assert!(status.success(), "{name}: topics apply {status}\n{out}");
    let landing = intake::topics::TopicNames::from_config(&cfg).landing();
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    let md = consumer
        .fetch_metadata(Some(&landing), Duration::from_secs(10))
        .unwrap();
    assert!(
        md.topics()[0].error().is_none() && !md.topics()[0].partitions().is_empty(),
        "{name}: {landing} was not created over the secured connection"
    );
    format!("{name}: connected, {landing} created")
}

#[test]
fn every_way_to_connect_reaches_the_cluster() {
    let s = secure_stack();
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(&str, String)> = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        .into_iter()
        .map(|m| (m, s.sasl_ssl_toml(m)))
        .collect();
    cases.push(("mTLS", mtls_toml(&s, Some("client"))));
    for (name, kafka) in cases {
        println!("{}", reaches_the_cluster(dir.path(), name, &kafka, ""));
    }
}

#[test]
fn each_misconfiguration_ends_start_up_within_30_s_naming_the_setting() {
    let s = secure_stack();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let with_wrong_password = |mechanism: &str| {
        s.sasl_ssl_toml(mechanism).replace(
            &s.tls.join("intake.password").display().to_string(),
            &wrong.display().to_string(),
        )
    };
    let cases = [
        (
            "scram-wrong-password",
            with_wrong_password("SCRAM-SHA-512"),
            "kafka.sasl.password",
        ),
        (
            "plain-wrong-password",
            with_wrong_password("PLAIN"),
            "kafka.sasl.password",
        ),
        (
            "untrusted-ca",
            s.sasl_ssl_toml("SCRAM-SHA-512").replace(
                &s.tls.join("ca.pem").display().to_string(),
                &s.tls.join("other-ca.pem").display().to_string(),
            ),
            "kafka.tls.ca_file",
        ),
        (
            "mtls-no-client-cert",
            mtls_toml(&s, None),
            "kafka.tls.cert_file",
        ),
        (
            "mtls-expired-client-cert",
            mtls_toml(&s, Some("client-expired")),
            "kafka.tls.cert_file",
        ),
    ];
    let secret = password(&s);
    let report: Vec<String> = cases
        .into_iter()
        .map(|(name, kafka, field)| kafka_refused(dir.path(), name, &kafka, field, &secret))
        .collect();
    println!("{}", report.join("\n"));
}

/// OAUTHBEARER: intake's clients take tokens from Keycloak (client credentials of
/// `intake-kafka`) and the broker checks them with Kafka's own OIDC support (signature against
/// Keycloak's JWKS, issuer, audience `kafka`). Works: `config --check` and `topics apply`, the
/// topic then listed by Kafka over the plaintext listener. Refused, each within 30 s naming the
/// setting, the secret nowhere: a wrong client secret (Keycloak refuses the grant), and a valid
/// Keycloak token of another client (`intake-fetch`, no `kafka` audience), which only the
/// broker's validation can refuse.
#[test]
fn oauthbearer_with_keycloak_tokens_reaches_the_cluster_and_misconfigurations_are_named() {
    let (kc, s, dir) = keycloak_stack();
    let reached = reaches_the_cluster(
        dir.path(),
        "OAUTHBEARER",
        &s.oauth_toml(kc, &kc.secret_file("intake-kafka.secret")),
        "OAUTHBEARER as OAuth client intake-kafka",
    );
    let mut report = vec![reached];
    report.extend(Conn::Kafka.oauth_refusals(kc, &s, dir.path()));
    println!("{}", report.join("\n"));
}

#[test]
fn the_registry_over_https_with_basic_auth_works_and_each_misconfiguration_is_named() {
    let s = secure_stack();
    let dir = tempfile::tempdir().unwrap();
    let good = s.registry_toml();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let secret = std::fs::read_to_string(s.tls.join("registry-client.password")).unwrap();
    let secret = secret.trim();
    let pw_file = s.tls.join("registry-client.password").display().to_string();
    let ca_file = s.tls.join("ca.pem").display().to_string();
    // Works: config --check reaches it (the pipeline test registers and reads schemas through it).
    let (path, _) = write_over_plain_kafka(dir.path(), "good", &good, "");
    let log = dir.path().join("good.log");
    succeeds_saying(
        &["config", "--check"],
        &path,
        &log,
        "registry: ok — https://",
    );
    let cases = [
        (
            "registry-wrong-password",
            good.replace(&pw_file, &wrong.display().to_string()),
            "registry.auth.password",
        ),
        (
            "registry-no-credentials",
            good.split("\n[registry.auth]").next().unwrap().to_owned()
                + &format!("\n[registry.tls]\nca_file = \"{ca_file}\""),
            "registry.auth",
        ),
        (
            "registry-untrusted-ca",
            good.replace(&ca_file, &s.tls.join("other-ca.pem").display().to_string()),
            "registry.tls.ca_file",
        ),
    ];
    let report: Vec<String> = cases
        .into_iter()
        .map(|(name, registry, field)| registry_refused(dir.path(), name, &registry, field, secret))
        .collect();
    println!("{}", report.join("\n"));
}

/// The registry that takes only Keycloak tokens (Apicurio's own OIDC support, audience
/// `registry`, over HTTPS): `registry.auth` with OAuth 2.0 client credentials reaches it
/// (`config --check`), and `intake schema apply` registers every stream's schema under both of
/// its subjects — listed afterwards by the registry itself, asked with a token the test got
/// from Keycloak. A wrong client secret (Keycloak refuses the grant) and a token of another
/// client (no `registry` audience: Apicurio answers 401) each end `intake validate`'s start-up
/// within 30 s naming the setting, the secret nowhere.
#[test]
fn the_registry_with_keycloak_tokens_takes_schemas_and_misconfigurations_are_named() {
    let (kc, s, dir) = keycloak_stack();
    let knobs = support::e2e::Knobs {
        serve_port: 9,
        quota: 10,
        poll: "1s",
        full_sync_every: "8s",
        lookback: "1m",
        page_size: 50,
    };
    let sources = support::e2e::sources("127.0.0.1:9".parse().unwrap(), &knobs);
    let good = s.oidc_registry_toml(kc, &kc.secret_file("intake-registry.secret"));
    let (path, text) = write_over_plain_kafka(dir.path(), "good", &good, &sources);
    let log = dir.path().join("good.log");
    for (args, want) in [
        (&["config", "--check"][..], "registry: ok — https://"),
        (&["schema", "apply"][..], "registered"),
    ] {
        succeeds_saying(args, &path, &log, want);
    }
    // The registry's own view, asked with the test's own token.
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    let names = intake::topics::TopicNames::from_config(&cfg);
    let token = kc.token("intake-registry");
    let ca = std::fs::read(s.tls.join("ca.pem")).unwrap();
    let url = format!("{}/subjects", kc.registry_url());
    let subjects: Vec<String> = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                    .build()
                    .unwrap()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            })
    })
    .join()
    .unwrap();
    for (stream, ..) in support::e2e::STREAMS {
        for subject in [
            names.subject("sim", stream),
            format!("{}-value", names.curated("sim", stream)),
        ] {
            assert!(
                subjects.contains(&subject),
                "{subject} not in the registry: {subjects:?}"
            );
        }
    }
    let mut report = vec![format!(
        "OIDC registry: {} subjects registered with Keycloak tokens",
        2 * support::e2e::STREAMS.len()
    )];
    report.extend(Conn::Registry.oauth_refusals(kc, &s, dir.path()));
    println!("{}", report.join("\n"));
}

#[test]
fn an_unreachable_cluster_is_reported_by_config_check_naming_the_brokers() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg_path = write(
        dir.path(),
        "closed",
        &format!("brokers = \"127.0.0.1:{port}\""),
    );
    let log = dir.path().join("closed.log");
    let started = Instant::now();
    let (status, out) = proc::intake(&["config", "--check"], &log)
        .config(&cfg_path)
        .capture_stdout()
        .spawn()
        .wait_output(Duration::from_secs(40));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("kafka: FAILED") && out.contains("`kafka.brokers`"),
        "{out}"
    );
    assert!(
        out.contains("registry: ok"),
        "the registry part still ran: {out}"
    );
    println!(
        "closed port: {:.1} s: {out}",
        started.elapsed().as_secs_f64()
    );
}

/// What the second origin received: (path, every header as `name: value`).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<String>)>>>;

/// The other origin: records every request's headers and serves one page.
async fn other_origin(seen: Seen) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/elsewhere/{name}",
        axum::routing::get(
            |axum::extract::State(seen): axum::extract::State<Seen>,
             axum::extract::Path(name): axum::extract::Path<String>,
             headers: axum::http::HeaderMap| async move {
                seen.lock().unwrap().push((
                    name.clone(),
                    headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
                        .collect(),
                ));
                axum::Json(serde_json::json!({"data": [{"id": format!("{name}-1"), "version": 1}]}))
            },
        ),
    );
    let app = app.with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The API: `/v1/{name}` redirects (302) within the origin to `/v1/{name}/moved`, which
/// demands the credentials (401 without them) and redirects (307) to the other origin;
/// `/v1/loop` redirects to itself.
async fn api(other: std::net::SocketAddr, key: &'static str) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode, header::LOCATION};
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/v1/{name}",
            axum::routing::get(|axum::extract::Path(name): axum::extract::Path<String>| async move {
                if name == "loop" {
                    return (StatusCode::FOUND, [(LOCATION, "/v1/loop".to_owned())]).into_response();
                }
                (StatusCode::FOUND, [(LOCATION, format!("/v1/{name}/moved"))]).into_response()
            }),
        )
        .route(
            "/v1/{name}/moved",
            axum::routing::get(
                move |axum::extract::Path(name): axum::extract::Path<String>, h: HeaderMap| async move {
                    let authorized = h.get("x-api-key").is_some_and(|v| v == key)
                        || h
                            .get("authorization")
                            .is_some_and(|v| v.to_str().unwrap_or("") == format!("Bearer {key}"));
                    if !authorized {
                        return (StatusCode::UNAUTHORIZED, "credentials missing after a same-origin redirect").into_response();
                    }
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(LOCATION, format!("http://{other}/elsewhere/{name}"))],
                    )
                        .into_response()
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_sends_credentials_only_to_the_origin_it_asked() {
    const KEY: &str = "key-4c1e9b7d2a-never-elsewhere";
    let seen: Seen = Default::default();
    let other = other_origin(seen.clone()).await;
    let api = api(other, KEY).await;
    let stream = |name: &str| {
        format!(
            "[[sources.streams]]\nname = \"{name}\"\npath = \"/v1/{name}\"\nprimary_key = \"/id\"\n\
             version = \"/version\"\npagination = {{ style = \"cursor\" }}\npages_per_transaction = 1\n"
        )
    };
    let extra = format!(
        "[[sources]]\nname = \"keyed\"\nbase_url = \"http://{api}\"\nmax_retries = 0\n\
         auth = {{ kind = \"api_key\", header = \"X-API-Key\", key = \"{KEY}\" }}\n{}{}\n\
         [[sources]]\nname = \"bearer\"\nbase_url = \"http://{api}\"\nmax_retries = 0\n\
         auth = {{ kind = \"bearer\", token = \"{KEY}\" }}\n{}",
        stream("things"),
        stream("loop"),
        stream("widgets"),
    );
    let cfg = std::sync::Arc::new(config(&extra));
    apply_topics(&cfg).await;
    let run = |streams: &[&str]| {
        let cfg = cfg.clone();
        let opts = intake::fetch::FetchOptions {
            once: true,
            streams: streams.iter().map(|s| s.to_string()).collect(),
            ..intake::fetch::FetchOptions::default()
        };
        async move {
            tokio::time::timeout(
                Duration::from_secs(120),
                intake::fetch::run(cfg, opts, std::future::pending()),
            )
            .await
            .expect("fetch ended")
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        }
    };
    run(&["keyed/things", "bearer/widgets"])
        .await
        .expect("both streams follow their redirects and land");
    let looped = run(&["keyed/loop"])
        .await
        .expect_err("a redirect loop fails");
    assert!(looped.contains("more than 5 redirects"), "{looped}");

    // The other origin was asked once per stream, never with a credential.
    let seen = seen.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 2, "{seen:?}");
    assert!(
        names.contains(&"things") && names.contains(&"widgets"),
        "{seen:?}"
    );
    for (name, headers) in &seen {
        let leaked: Vec<&String> = headers
            .iter()
            .filter(|h| {
                let l = h.to_ascii_lowercase();
                h.contains(KEY)
                    || l.starts_with("authorization:")
                    || l.starts_with("x-api-key:")
                    || l.starts_with("cookie:")
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "{name}: credentials sent to another origin: {leaked:?}"
        );
    }
    // What the other origin served was landed (the same-origin hop kept the credentials,
    // or the API's 401 would have ended the stream).
    let pages = landed_pages(&cfg).await;
    let mut ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|(id, _)| id.as_str()))
        .collect();
    ids.sort();
    assert_eq!(ids, ["things-1", "widgets-1"], "landed records");
}
