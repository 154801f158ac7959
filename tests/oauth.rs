//! Issue 18 (OAuth 2.0 sources), against a real identity provider: Keycloak, started by
//! `scripts/stack start keycloak` (realm `intake` from `scripts/stack.d/keycloak-realm.json`:
//! client `intake-fetch` for client_credentials, client `intake-refresh` with single-use
//! refresh tokens — "revoke refresh token", max reuse 0 — and 8 s access tokens, events on).
//! The simulator runs with `--oidc-issuer`: it accepts only access tokens Keycloak signed,
//! checked against Keycloak's JWKS.
//!
//! - `client_credentials_end_to_end`: `intake run` with an `oauth2` client_credentials source;
//!   the curated topics equal the simulator's truth exactly, and every request the simulator
//!   served carried a Keycloak-signed token.
//! - `a_fenced_owner_neither_refreshes_nor_writes`: two owners of one quota partition in one
//!   process; once the second has fenced the first, the first's refresh fails before it reaches
//!   Keycloak (no refresh event, the refresh token is not spent) and it hands out no token,
//!   while the second continues with the stored refresh token.
//! - `rotated_refresh_tokens_survive_sigkill_and_scaling`: long-running `intake fetch`
//!   processes, scaled 1 → 3 → 1; ten times the owner of the token is SIGKILLed right after it
//!   committed a rotated refresh token; every successor continues with it (Keycloak's event
//!   log shows no refresh error at all), the curated topics equal the truth exactly, and the
//!   token topic never held a refresh token in clear (every record read uncommitted too).
//!
//! Waits are on observable conditions (Keycloak's events, the token topic, the comparison with
//! the truth), each with a generous deadline.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use intake::fetch::oauth::TokenRecord;
use intake::topics::TopicNames;
use support::e2e::{self, Knobs};
use support::proc::{self, Proc};
use support::*;

/// The key that seals refresh tokens in these tests (a test's own value).
const TOKEN_KEY: &str = "5d6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";

/// The local stack's Keycloak ([`support::keycloak`]), from an async test.
async fn keycloak() -> &'static Keycloak {
    tokio::task::spawn_blocking(support::keycloak)
        .await
        .unwrap()
}

impl Keycloak {
    /// A grant at the token endpoint as the client `intake-refresh`: Keycloak's JSON answer.
    async fn grant(&self, pairs: &[(&str, &str)]) -> serde_json::Value {
        post_form(
            reqwest::Client::new()
                .post(self.token_url())
                .basic_auth("intake-refresh", Some(self.secret("intake-refresh.secret"))),
            pairs,
        )
        .await
    }

    /// A user's first refresh token (password grant of `intake-refresh`) and its session id.
    async fn login(&self) -> (String, String) {
        let v = self
            .grant(&[
                ("grant_type", "password"),
                ("username", "intake-user"),
                ("password", &self.secret("intake-user.password")),
            ])
            .await;
        let rt = v["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh token: {v}"))
            .to_owned();
        (
            rt,
            v["session_state"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// The realm's events of `types` (newest first), through the admin REST API.
    async fn events(&self, types: &[&str]) -> Vec<serde_json::Value> {
        let http = reqwest::Client::new();
        let admin = post_form(
            http.post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            )),
            &[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", &self.secret("admin.password")),
            ],
        )
        .await;
        let mut q: Vec<(&str, &str)> = types.iter().map(|t| ("type", *t)).collect();
        q.push(("max", "100000"));
        json_answer(
            http.get(format!("{}/admin/realms/intake/events", self.url))
                .bearer_auth(admin["access_token"].as_str().expect("an admin token"))
                .query(&q),
        )
        .await
    }

    /// Redeems a refresh token (a refresh_token grant of `intake-refresh`): Ok, or Keycloak's
    /// error.
    async fn redeem(&self, token: &str) -> Result<(), String> {
        let v = self
            .grant(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .await;
        match v["access_token"].as_str() {
            Some(_) => Ok(()),
            None => Err(v["error"].as_str().unwrap_or("no error code").to_owned()),
        }
    }
}

/// Sends `req`; its answer, parsed as JSON (the test fails if it cannot be sent or parsed).
async fn json_answer<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> T {
    req.send().await.unwrap().json().await.unwrap()
}

/// Sends `pairs` as a form (`application/x-www-form-urlencoded`); the JSON answer.
async fn post_form(req: reqwest::RequestBuilder, pairs: &[(&str, &str)]) -> serde_json::Value {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    json_answer(
        req.header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

/// Events of one login session.
fn of_session<'a>(
    events: &'a [serde_json::Value],
    session: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    events.iter().filter(move |e| e["sessionId"] == session)
}

fn oauth_client_credentials(kc: &Keycloak) -> String {
    format!(
        r#"auth = {{ kind = "oauth2", grant = "client_credentials", token_url = "{}", client_id = "intake-fetch", client_secret = {{ file = "{}" }} }}"#,
        kc.token_url(),
        kc.secret_file("intake-fetch.secret").display()
    )
}

/// The refresh-token file (written by the caller) and the key file (written here) in `dir`.
fn secret_files(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("key");
    std::fs::write(&key, TOKEN_KEY).unwrap();
    (dir.join("rt"), key)
}

fn oauth_refresh(kc: &Keycloak, rt_file: &Path, key_file: &Path) -> String {
    format!(
        r#"auth = {{ kind = "oauth2", grant = "refresh_token", token_url = "{}", client_id = "intake-refresh", client_secret = {{ file = "{}" }}, refresh_token = {{ file = "{}" }}, token_key = {{ file = "{}" }}, refresh_margin = "4s" }}"#,
        kc.token_url(),
        kc.secret_file("intake-refresh.secret").display(),
        rt_file.display(),
        key_file.display()
    )
}

/// The simulator's three streams (1 s polls, full syncs every 10 s, 20 records a page) with
/// `auth` instead of the bearer token.
fn sources_with(sim: &intake::sim::SimHandle, auth: &str) -> String {
    let knobs = Knobs {
        serve_port: e2e::free_port(),
        quota: 50,
        poll: "1s",
        full_sync_every: "10s",
        lookback: "1m",
        page_size: 20,
    };
    let s = e2e::sources(sim.addr, &knobs);
    let bearer = r#"auth = { kind = "bearer", token = "demo" }"#;
    assert!(s.contains(bearer));
    s.replace(bearer, auth)
}

async fn oidc_sim(kc: &Keycloak, extra: &[&str]) -> intake::sim::SimHandle {
    let issuer = kc.issuer();
    let mut flags = vec![
        "--token",
        "demo=1000",
        "--oidc-issuer",
        issuer.as_str(),
        "--oidc-quota-token",
        "demo",
    ];
    flags.extend_from_slice(extra);
    sim(&flags).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_end_to_end() {
    let kc = keycloak().await;
    let sim = oidc_sim(kc, &["--records", "120", "--drift-rate", "0.05"]).await;
    // The simulator refuses anything that is not a Keycloak token.
    let refused = support::scenario::sim_as(&sim, "/v1/customers", "demo").await;
    assert_eq!(refused.status(), 401, "a non-JWT token is refused");
    let text = config_text(&sources_with(&sim, &oauth_client_credentials(kc)));
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    apply_topics(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &text);
    let log = dir.path().join("intake-run.log");
    let begun = time::OffsetDateTime::now_utc();
    let mut run = proc::intake(&["run"], &log)
        .config(&cfg_path)
        .env("INTAKE_INSTANCE_ID", "oauth-cc")
        .spawn();
    e2e::wait_for_syncs_after(&cfg, begun, Duration::from_secs(120), || {
        proc::tail(&log, 40)
    })
    .await;
    let truth = truth(&sim).await;
    let report = e2e::converge(&cfg, &truth, Duration::from_secs(60)).await;
    if !e2e::equal(&report) {
        println!("{}", e2e::diagnose(&cfg, std::slice::from_ref(&log)).await);
    }
    let doubles = blocking({
        let cfg = cfg.clone();
        move || e2e::doubles(&cfg)
    })
    .await;
    let f = e2e::assert_exact(&report, &doubles, &truth, false);
    let stats = sim_stats(&sim).await;
    let accepted = stats["oidc_accepted"].as_u64().unwrap();
    let pages = stats["pages"].as_u64().unwrap();
    assert!(
        accepted >= pages && pages > 0,
        "every page was served to a Keycloak token: {accepted} accepted, {pages} pages"
    );
    // The only refusal is the test's own non-JWT request.
    assert_eq!(stats["unauthorized"], 1, "{stats}");
    let cc = kc.events(&["CLIENT_LOGIN"]).await;
    let ours = cc
        .iter()
        .filter(|e| e["clientId"] == "intake-fetch")
        .count();
    assert!(ours >= 1, "Keycloak logged the client_credentials grant");
    run.terminate(Duration::from_secs(60));
    let secret = kc.secret("intake-fetch.secret");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(&secret), "the client secret is in the log");
    println!(
        "client_credentials: {} keys matched, {accepted} Keycloak-signed requests accepted, {pages} pages, {ours} client_credentials grants in Keycloak's log; {f:?}",
        report.streams.values().map(|c| c.matched).sum::<usize>()
    );
}

/// The committed token record of `token` (None before the first).
fn token_record(cfg: &intake::config::Config, token: &str, isolation: &str) -> Vec<TokenRecord> {
    let topic = TopicNames::from_config(cfg).tokens();
    let mut recs = read_all(&topic, isolation);
    recs.sort_by_key(|r| (r.partition, r.offset));
    recs.iter()
        .filter(|r| r.key_str() == token)
        .filter_map(|r| r.value.as_deref())
        .map(|v| serde_json::from_slice::<TokenRecord>(v).expect("a token record"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_owner_neither_refreshes_nor_writes() {
    let kc = keycloak().await;
    let (rt, session) = kc.login().await;
    let dir = tempfile::tempdir().unwrap();
    let (rt_file, key_file) = secret_files(dir.path());
    std::fs::write(&rt_file, &rt).unwrap();
    let text = config_text(&format!(
        "[[sources]]\nname = \"api\"\nbase_url = \"http://127.0.0.1:1\"\n{}\n",
        oauth_refresh(kc, &rt_file, &key_file)
    ));
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    apply_topics(&cfg).await;
    let src = &cfg.sources[0];
    let intake::config::Auth::Oauth2(o) = src.auth.as_ref().unwrap() else {
        unreachable!()
    };
    let names = TopicNames::from_config(&cfg);
    let k = kafka(&cfg);
    let partitions = 8;
    let p = intake::kafka::partition::partition_for(b"api", partitions);
    let open = |instance: &'static str| {
        let (k, prefix, topic) = (k.clone(), cfg.kafka.group_prefix.clone(), names.quota());
        let tokens = names.tokens();
        async move {
            let store =
                blocking(move || intake::quota::QuotaStore::open(&k, &prefix, &topic, p).unwrap())
                    .await;
            intake::fetch::oauth::TokenSink {
                store,
                topic: tokens,
                owner: instance.into(),
            }
        }
    };
    let a = intake::fetch::oauth::OAuth2::new(o, "api", "sources[0].auth").unwrap();
    let sink_a = open("a").await;
    a.arm(sink_a, None).await;
    let t1 = a.bearer().await.expect("the first owner refreshes");
    let refreshes = |evs: &[serde_json::Value]| of_session(evs, &session).count();
    let ev = kc.events(&["REFRESH_TOKEN", "REFRESH_TOKEN_ERROR"]).await;
    assert_eq!(refreshes(&ev), 1, "one refresh so far");
    // A second owner of the partition fences the first and reads what it committed.
    let sink_b = open("b").await;
    let stored = {
        let s = sink_b.clone();
        blocking(move || s.read().unwrap()).await
    };
    let rec = stored.get("api").expect("the rotation was committed");
    assert_eq!((rec.owner.as_str(), rec.rotations), ("a", 1));
    // The first owner's token is refused (as after a 401) and it tries to refresh: the
    // ownership proof fails before Keycloak is asked, and it holds no token any more.
    a.rejected(&t1).await;
    let e = a.bearer().await.expect_err("a fenced owner gets no token");
    assert!(
        matches!(e, intake::fetch::oauth::AuthError::Fenced(_)),
        "{e}"
    );
    assert!(matches!(
        a.bearer().await,
        Err(intake::fetch::oauth::AuthError::Fenced(_))
    ));
    let ev = kc.events(&["REFRESH_TOKEN", "REFRESH_TOKEN_ERROR"]).await;
    assert_eq!(refreshes(&ev), 1, "the fenced owner did not reach Keycloak");
    // The new owner continues with the stored (rotated) refresh token.
    let b = intake::fetch::oauth::OAuth2::new(o, "api", "sources[0].auth").unwrap();
    b.arm(sink_b, Some(rec)).await;
    b.bearer().await.expect("the new owner refreshes");
    let ev = kc.events(&["REFRESH_TOKEN", "REFRESH_TOKEN_ERROR"]).await;
    let errors: Vec<_> = of_session(&ev, &session)
        .filter(|e| e["type"] == "REFRESH_TOKEN_ERROR")
        .collect();
    assert!(errors.is_empty(), "refresh errors: {errors:?}");
    assert_eq!(refreshes(&ev), 2);
    let history = blocking({
        let cfg = cfg.clone();
        move || token_record(&cfg, "api", "read_committed")
    })
    .await;
    let owners: Vec<(&str, u64)> = history
        .iter()
        .map(|r| (r.owner.as_str(), r.rotations))
        .collect();
    // a: ownership proof (0), rotation (1); b: proof (1), rotation (2). Nothing from a after b.
    assert_eq!(owners, [("a", 0), ("a", 1), ("b", 1), ("b", 2)]);
    // The original refresh token is spent; nothing in the topic holds any token in clear.
    let raw = blocking({
        let t = names.tokens();
        move || read_all(&t, "read_uncommitted")
    })
    .await;
    for r in raw.iter().filter(|r| r.key_str() == "api") {
        assert_no_token_in_clear(r.value.as_deref().unwrap_or_default(), &rt);
    }
    println!("fencing: history {owners:?}");
}

/// Asserts a token-topic value holds no token in clear: not `first` (the configured refresh
/// token), no JWT (Keycloak's tokens are JWTs, `eyJhbGciOi…`) in any field but the sealed
/// ciphertext, and none in the ciphertext's bytes either. Returns the record.
fn assert_no_token_in_clear(value: &[u8], first: &str) -> TokenRecord {
    let text = String::from_utf8_lossy(value);
    assert!(
        !text.contains(first),
        "the first refresh token in clear: {text}"
    );
    let rec: TokenRecord = serde_json::from_slice(value).expect("a token record");
    let mut clear = rec.clone();
    let sealed = clear.sealed.take();
    let clear = serde_json::to_string(&clear).unwrap();
    assert!(!clear.contains("eyJ"), "a JWT in clear: {clear}");
    if let Some(s) = sealed {
        use base64::Engine as _;
        for part in [&s.nonce, &s.ciphertext] {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(part)
                .expect("base64");
            assert!(
                !bytes.windows(10).any(|w| w == b"eyJhbGciOi"),
                "a JWT inside the sealed value's bytes"
            );
        }
    }
    rec
}

/// A long-running `intake fetch` with its own instance id.
fn spawn_fetch(cfg: &Path, dir: &Path, id: &str) -> Proc {
    proc::intake(&["fetch"], dir.join(format!("{id}.log")))
        .config(cfg)
        .env("INTAKE_INSTANCE_ID", id)
        .spawn()
}

/// Waits until the token's committed history has a rotation beyond `after` and returns the
/// newest record.
async fn next_rotation(
    cfg: &intake::config::Config,
    after: u64,
    deadline: Duration,
    context: impl Fn() -> String,
) -> TokenRecord {
    let until = Instant::now() + deadline;
    loop {
        let recs = blocking({
            let cfg = cfg.clone();
            move || token_record(&cfg, "sim", "read_committed")
        })
        .await;
        if let Some(r) = recs.last()
            && r.rotations > after
        {
            return r.clone();
        }
        assert!(
            Instant::now() < until,
            "no rotation past {after} within {deadline:?}; last {:?}\n{}",
            recs.last(),
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_refresh_tokens_survive_sigkill_and_scaling() {
    const KILLS: usize = 10;
    let started = Instant::now();
    let kc = keycloak().await;
    let sim = oidc_sim(
        kc,
        &[
            "--records",
            "150",
            "--write-rate",
            "4",
            "--backdate-rate",
            "0",
        ],
    )
    .await;
    let (rt, session) = kc.login().await;
    let dir = tempfile::tempdir().unwrap();
    let (rt_file, key_file) = secret_files(dir.path());
    std::fs::write(&rt_file, &rt).unwrap();
    let mut text = config_text(&sources_with(&sim, &oauth_refresh(kc, &rt_file, &key_file)));
    // No webhooks in this test (serve does not run).
    text = text.replace(
        &format!("webhook = {{ secrets = [\"{}\"] }}\n", e2e::WEBHOOK_SECRET),
        "",
    );
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    apply_topics_and_schemas(&cfg).await;
    let cfg_path = write_config(dir.path(), &text);
    let mut validate = proc::intake(&["validate"], dir.path().join("validate.log"))
        .config(&cfg_path)
        .spawn();
    let mut dedup = proc::intake(&["dedup"], dir.path().join("dedup.log"))
        .config(&cfg_path)
        .spawn();
    let logs = dir.path().to_owned();
    let tail_all = move || {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&logs) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    out.push_str(&format!("--- {}\n", e.path().display()));
                    out.push_str(&proc::tail(&e.path(), 15));
                }
            }
        }
        out
    };

    // 1 process.
    let mut fetch: BTreeMap<String, Proc> = BTreeMap::new();
    let mut n = 0;
    let mut spawn = |fetch: &mut BTreeMap<String, Proc>| {
        let id = format!("f{n}");
        n += 1;
        fetch.insert(id.clone(), spawn_fetch(&cfg_path, dir.path(), &id));
        id
    };
    spawn(&mut fetch);
    let wait = Duration::from_secs(120);
    let mut last = next_rotation(&cfg, 0, wait, &tail_all).await;
    // 1 → 3.
    spawn(&mut fetch);
    spawn(&mut fetch);
    let mut owners = vec![last.owner.clone()];
    for kill in 0..KILLS {
        // Right after a rotation is committed, SIGKILL its owner.
        last = next_rotation(&cfg, last.rotations, wait, &tail_all).await;
        let victim = last.owner.clone();
        let p = fetch
            .get_mut(&victim)
            .unwrap_or_else(|| panic!("the owner {victim} is not a live process of this test"));
        p.kill();
        fetch.remove(&victim);
        let killed_at = last.rotations;
        println!(
            "kill {}: SIGKILLed {victim} right after rotation {killed_at} ({:.0} s)",
            kill + 1,
            started.elapsed().as_secs_f64()
        );
        // Keep three processes.
        spawn(&mut fetch);
        // A successor continues from the rotated token.
        let next = next_rotation(&cfg, killed_at, wait, &tail_all).await;
        assert_ne!(next.owner, victim, "a killed process wrote");
        assert!(next.rotations > killed_at);
        owners.push(next.owner.clone());
        last = next;
    }
    // 3 → 1: stop two gracefully (their partitions are handed over at once).
    let keep = fetch.keys().next().unwrap().clone();
    let others: Vec<String> = fetch.keys().filter(|k| **k != keep).cloned().collect();
    for id in others {
        fetch
            .remove(&id)
            .unwrap()
            .terminate(Duration::from_secs(60));
    }
    last = next_rotation(&cfg, last.rotations, wait, &tail_all).await;
    assert_eq!(last.owner, keep, "the last process owns the token");
    last = next_rotation(&cfg, last.rotations, wait, &tail_all).await;

    // The writer stops; the pipeline catches up with the truth.
    sim_admin(&sim, "/admin/pause").await;
    let paused = time::OffsetDateTime::now_utc();
    e2e::wait_for_syncs_after(&cfg, paused, Duration::from_secs(120), &tail_all).await;
    let truth = truth(&sim).await;
    let report = e2e::converge(&cfg, &truth, Duration::from_secs(60)).await;
    if !e2e::equal(&report) {
        println!("{}", tail_all());
    }
    let doubles = blocking({
        let cfg = cfg.clone();
        move || e2e::doubles(&cfg)
    })
    .await;
    let f = e2e::assert_exact(&report, &doubles, &truth, false);

    // Keycloak's log: refreshes of this session only succeeded.
    let ev = kc.events(&["REFRESH_TOKEN", "REFRESH_TOKEN_ERROR"]).await;
    let errors: Vec<_> = of_session(&ev, &session)
        .filter(|e| e["type"] == "REFRESH_TOKEN_ERROR")
        .collect();
    assert!(errors.is_empty(), "Keycloak refused refreshes: {errors:?}");
    let all_errors = ev
        .iter()
        .filter(|e| e["type"] == "REFRESH_TOKEN_ERROR" && e["clientId"] == "intake-refresh")
        .filter(|e| e["sessionId"] == session.as_str())
        .count();
    assert_eq!(all_errors, 0);
    let refreshes = of_session(&ev, &session).count() as u64;
    assert!(
        refreshes >= last.rotations && last.rotations as usize > KILLS,
        "{refreshes} refreshes in Keycloak's log, {} rotations committed",
        last.rotations
    );

    // The token topic, every record (aborted ones too): never a token in clear; the last
    // committed refresh token opens with the key and is live in Keycloak.
    let raw = blocking({
        let t = TopicNames::from_config(&cfg).tokens();
        move || read_all(&t, "read_uncommitted")
    })
    .await;
    let ours: Vec<_> = raw.iter().filter(|r| r.key_str() == "sim").collect();
    assert!(ours.len() as u64 > last.rotations);
    for r in &ours {
        let rec = assert_no_token_in_clear(r.value.as_deref().unwrap_or_default(), &rt);
        assert_eq!(
            rec.sealed.as_ref().map(|s| s.alg.as_str()),
            Some("xchacha20poly1305")
        );
    }
    for (_, mut p) in std::mem::take(&mut fetch) {
        p.terminate(Duration::from_secs(60));
    }
    let key = intake::fetch::oauth::TokenKey::parse(
        &intake::config::SecretString::new(TOKEN_KEY),
        "test",
    )
    .unwrap();
    let newest = blocking({
        let cfg = cfg.clone();
        move || token_record(&cfg, "sim", "read_committed")
    })
    .await
    .pop()
    .unwrap();
    let current = key.open_refresh_token(&newest).expect("the key opens it");
    // Every fetch process has stopped: the stored refresh token is the live one (Keycloak
    // accepts it), and the first one was spent long ago (Keycloak refuses it).
    kc.redeem(current.expose())
        .await
        .expect("the stored refresh token is the live one");
    assert_eq!(
        kc.redeem(&rt).await,
        Err("invalid_grant".to_owned()),
        "the first refresh token was spent"
    );
    let stats = sim_stats(&sim).await;
    validate.terminate(Duration::from_secs(60));
    dedup.terminate(Duration::from_secs(60));
    let secret_values = [
        rt.clone(),
        current.expose().to_owned(),
        kc.secret("intake-refresh.secret"),
    ];
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let l = std::fs::read_to_string(e.path()).unwrap();
            for s in &secret_values {
                assert!(
                    !l.contains(s.as_str()),
                    "a secret in {}",
                    e.path().display()
                );
            }
        }
    }
    println!(
        "rotation: {KILLS} SIGKILLs of the owner right after a rotation, fetch 1 → 3 → 1; owners {owners:?}; {} rotations committed, {refreshes} refreshes in Keycloak's log, 0 refresh errors; {} Keycloak-signed requests accepted by the simulator ({} refused); {f:?}; {:.0} s",
        newest.rotations,
        stats["oidc_accepted"],
        stats["unauthorized"],
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_pauses_the_stream_with_the_reason_status_shows() {
    let kc = keycloak().await;
    let sim = oidc_sim(kc, &["--records", "10"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (rt_file, key_file) = secret_files(dir.path());
    // Not a refresh token Keycloak ever issued.
    std::fs::write(&rt_file, "not-a-refresh-token-4f1c").unwrap();
    let source = format!(
        "base_url = \"http://{}\"\n{}",
        sim.addr,
        oauth_refresh(kc, &rt_file, &key_file)
    );
    let customers = r#"path = "/v1/customers"
pagination = { style = "cursor" }"#;
    let text = config_text(&keyed_source("sim", &source, &[("customers", customers)]));
    let cfg = std::sync::Arc::new(intake::config::Config::from_toml(&text).unwrap());
    apply_topics(&cfg).await;
    let err = intake::fetch::run(
        cfg.clone(),
        intake::fetch::FetchOptions {
            once: true,
            ..Default::default()
        },
        std::future::pending(),
    )
    .await
    .expect_err("the refresh token is refused");
    let shown = err.to_string();
    assert!(shown.contains("invalid_grant"), "{shown}");
    assert!(!shown.contains("not-a-refresh-token"), "{shown}");
    let status = intake::status::gather(&cfg).await.unwrap();
    let o = &status.oauth["sim"];
    assert_eq!(o.grant, "refresh_token");
    let paused = o.paused.as_deref().expect("a pause reason");
    assert!(paused.contains("invalid_grant"), "{paused}");
    let json = serde_json::to_string(&status).unwrap();
    assert!(!json.contains("not-a-refresh-token"));
    assert_eq!(sim_stats(&sim).await["pages"], 0, "nothing was fetched");
    println!("refused: status shows `{paused}`");
}
