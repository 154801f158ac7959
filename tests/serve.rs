//! Issue 7: serve lands signed webhooks and idempotent jobs exactly once, and refuses bad input
//! with a clear status and reason, landing nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use intake::config::Config;
use intake::topics::TopicNames;
use support::*;

const SECRET: &str = "whsec-test";
const OLD_SECRET: &str = "whsec-old";

fn serve_config() -> Arc<Config> {
    Arc::new(config(&shop_source(
        &[SECRET, OLD_SECRET],
        &["customers", "orders"],
    )))
}

use support::Serve as Server;

fn event(id: &str, entity: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event_id": id, "type": "updated", "stream": "customers", "entity_id": entity, "seq": seq,
        "data": {"id": entity, "version": seq}
    }))
    .unwrap()
}

async fn post_webhook(
    base: &str,
    source: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/webhooks/{source}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = signature {
        req = req.header("X-Intake-Signature", s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// [`post_webhook`] of `body`, signed now with the current secret [`SECRET`].
async fn post_signed(base: &str, source: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let signature = intake::signing::sign(SECRET.as_bytes(), now(), body);
    post_webhook(base, source, body.to_vec(), Some(signature)).await
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_webhooks_land_once_and_bad_ones_get_a_reason_and_land_nothing() {
    let cfg = serve_config();
    apply_topics(&cfg).await;
    let srv = Server::start(cfg.clone()).await;
    let b = &srv.base;

    // Refusals, each with its status and a reason.
    let body = event("e-bad", "cus_1", 1);
    let (s, v) = post_webhook(b, "shop", body.clone(), None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad_signature")));
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("missing signature header"),
        "{v}"
    );
    let (s, v) = post_webhook(
        b,
        "shop",
        body.clone(),
        Some(intake::signing::sign(b"wrong", now(), &body)),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        v["message"].as_str().unwrap().contains("bad signature"),
        "{v}"
    );
    // A captured request replayed outside the 5 minute window.
    let (s, v) = post_webhook(
        b,
        "shop",
        body.clone(),
        Some(intake::signing::sign(
            SECRET.as_bytes(),
            now() - 3600,
            &body,
        )),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        v["message"].as_str().unwrap().contains("stale signature"),
        "{v}"
    );
    // A body altered after signing.
    let mut altered = body.clone();
    altered[2] = b'E';
    let (s, _) = post_webhook(
        b,
        "shop",
        altered,
        Some(intake::signing::sign(SECRET.as_bytes(), now(), &body)),
    )
    .await;
    assert_eq!(s, 401);
    let junk = b"{not json".to_vec();
    let (s, v) = post_signed(b, "shop", &junk).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("malformed_json")));
    assert!(v["message"].as_str().unwrap().contains("line 1"), "{v}");
    let (s, v) = post_signed(b, "nope", &body).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_source")));
    let huge = vec![b' '; cfg.serve.max_body_bytes + 1];
    let (s, _) = post_signed(b, "shop", &huge).await;
    assert_eq!(s, 413);
    let no_entity =
        serde_json::to_vec(&serde_json::json!({"event_id": "x", "stream": "customers", "seq": 1}))
            .unwrap();
    let (s, v) = post_signed(b, "shop", &no_entity).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("missing_field")));

    // Good events, signed with the current secret or (during rotation) the old one.
    let mut accepted = Vec::new();
    for i in 0..20u64 {
        let body = event(&format!("e{i}"), &format!("cus_{}", i % 5), i);
        let secret = if i % 2 == 0 { SECRET } else { OLD_SECRET };
        let signature = intake::signing::sign(secret.as_bytes(), now(), &body);
        let (s, v) = post_webhook(b, "shop", body.clone(), Some(signature.clone())).await;
        assert_eq!(s, 202, "{v}");
        accepted.push((body, signature));
    }
    // The same signed requests sent again, unchanged, inside the window: a replay or a
    // sender's retry (the signature proves the sender, not that this is the first delivery).
    // 200 `duplicate`, so a retrying sender stops; nothing lands again (counted below).
    for (body, signature) in accepted.iter().step_by(5) {
        let (s, v) = post_webhook(b, "shop", body.clone(), Some(signature.clone())).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")), "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("landed before"),
            "{v}"
        );
    }
    srv.stop().await;

    let landed = read_landing(&cfg);
    assert_eq!(landed.len(), 20, "exactly the accepted events, once each");
    let mut ids: Vec<&str> = landed
        .iter()
        .map(|r| r.header("intake.event_id").unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    for r in &landed {
        assert_eq!(r.header("intake.kind"), Some("event"));
        assert_eq!(r.header("intake.source"), Some("shop"));
        assert_eq!(r.header("intake.stream"), Some("customers"));
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            r.key_str(),
            v["entity_id"].as_str().unwrap(),
            "keyed by entity id"
        );
        assert_eq!(r.header("intake.seq"), Some(v["seq"].to_string().as_str()));
        assert!(
            r.headers
                .iter()
                .all(|(_, v)| !String::from_utf8_lossy(v).contains(SECRET)),
            "no secret in headers"
        );
    }
}

async fn post_job(base: &str, key: &str, query: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = serve_http()
        .post(format!("{base}/v1/jobs?{query}"))
        .header("Idempotency-Key", key)
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_idempotent_survive_a_restart_and_accept_large_batches_by_reference() {
    let cfg = serve_config();
    apply_topics(&cfg).await;
    let srv = Server::start(cfg.clone()).await;
    let batch = serde_json::to_vec(
        &serde_json::json!({"data": [{"id": "o1", "version": 1}, {"id": "o2", "version": 1}]}),
    )
    .unwrap();
    let q = "source=shop&stream=orders";

    let (s, first) = post_job(&srv.base, "job-1", q, batch.clone()).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["records"], 2);
    let (s, again) = post_job(&srv.base, "job-1", q, batch.clone()).await;
    assert_eq!(s, 200, "the same key and body returns the existing job");
    assert_eq!(again, first);
    let other =
        serde_json::to_vec(&serde_json::json!({"data": [{"id": "o3", "version": 1}]})).unwrap();
    let (s, v) = post_job(&srv.base, "job-1", q, other.clone()).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("job_id_reused")));
    let (s, v) = post_job(&srv.base, "job-2", q, b"[1,2".to_vec()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("malformed_json")));
    // Keys starting with `~` are intake's own records in `intake.jobs` (count deltas, replay
    // markers); a client must not be able to overwrite them.
    let (s, v) = post_job(&srv.base, "~counts/x", q, batch.clone()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("reserved_job_id")));

    // A batch over the inline limit goes by reference.
    let big: Vec<serde_json::Value> = (0..60_000)
        .map(|i| serde_json::json!({"id": format!("o{i}"), "version": 1, "pad": "x".repeat(64)}))
        .collect();
    let big = serde_json::to_vec(&serde_json::json!({ "data": big })).unwrap();
    assert!(big.len() > cfg.serve.max_body_bytes);
    let r = serve_http()
        .put(format!("{}/v1/blobs/big-batch.json", srv.base))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (s, job) = post_job(
        &srv.base,
        "job-big",
        &format!("{q}&blob=big-batch.json"),
        Vec::new(),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["records"], 60_000);
    srv.stop().await;

    // A restarted server remembers every job.
    let srv = Server::start(cfg.clone()).await;
    let (s, again) = post_job(&srv.base, "job-1", q, batch.clone()).await;
    assert_eq!((s, &again), (200, &first));
    let (s, _) = post_job(&srv.base, "job-1", q, other).await;
    assert_eq!(s, 409);
    let r = get_json(&serve_http(), &format!("{}/v1/jobs/job-big", srv.base)).await;
    assert_eq!(r["records"], 60_000);
    srv.stop().await;

    let landed = read_landing(&cfg);
    let per_job = |id: &str| {
        landed
            .iter()
            .filter(|r| r.header("intake.job_id") == Some(id))
            .count()
    };
    assert_eq!(per_job("job-1"), 1, "landed once");
    assert_eq!(per_job("job-big"), 1);
    let big_rec = landed
        .iter()
        .find(|r| r.header("intake.job_id") == Some("job-big"))
        .unwrap();
    assert_eq!(big_rec.header("intake.kind"), Some("blob-ref"));
    let b = intake::blob::BlobRef::parse_header(big_rec.header("intake.blob").unwrap()).unwrap();
    assert_eq!(b.sha256, intake::blob::sha256_hex(&big));
    let jobs = read_all(&TopicNames::from_config(&cfg).jobs(), "read_committed");
    assert_eq!(jobs.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_openapi_answer() {
    let cfg = serve_config();
    apply_topics(&cfg).await;
    let srv = Server::start(cfg).await;
    assert_eq!(get_text(&format!("{}/healthz", srv.base)).await, "ok");
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", srv.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/v1/webhooks/{source}",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/blobs/{name}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} documented");
    }
    assert_eq!(
        doc["paths"]["/v1/jobs"]["post"]["security"],
        serde_json::json!([{"bearer": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let m = reqwest::get(format!("{}/metrics", srv.base)).await.unwrap();
    assert_eq!(m.status().as_u16(), 200);
    let r = reqwest::get(format!("{}/v1/nothing", srv.base))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    srv.stop().await;
}

/// A request to serve with an optional `Authorization` header; the status, the
/// `WWW-Authenticate` header and the JSON body.
async fn call(
    method: reqwest::Method,
    url: String,
    auth: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url).body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        challenge,
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_refuse_with_401_and_403_blob_names_are_write_once_and_refusals_land_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let loader_key = "ldr-7d0f0d8a2c4b";
    let uploader_key = "upl-91b3e55f0a6c";
    std::fs::write(dir.path().join("loader"), format!("{loader_key}\n")).unwrap();
    std::fs::write(dir.path().join("uploader"), uploader_key).unwrap();
    // A third client reads crm's jobs only.
    let crm_key = "crm-0b5e4c1d9a77";
    std::fs::write(dir.path().join("crm"), crm_key).unwrap();
    let cfg = Arc::new(config(&format!(
        r#"
[[serve.clients]]
name = "loader"
key = {{ file = "{loader}" }}
operations = ["jobs"]
sources = ["shop"]

[[serve.clients]]
name = "uploader"
key = {{ file = "{uploader}" }}
operations = ["blobs"]
sources = ["*"]

[[serve.clients]]
name = "crm-reader"
key = {{ file = "{crm_file}" }}
operations = ["jobs"]
sources = ["crm"]
{shop}{crm}"#,
        loader = dir.path().join("loader").display(),
        uploader = dir.path().join("uploader").display(),
        crm_file = dir.path().join("crm").display(),
        shop = keyed_source("shop", "", &[("orders", "")]),
        crm = keyed_source("crm", "", &[("accounts", "")]),
    )));
    apply_topics(&cfg).await;
    let srv = Server::start(cfg.clone()).await;
    let b = &srv.base;
    let loader = format!("Bearer {loader_key}");
    let uploader = format!("Bearer {uploader_key}");
    let batch = |ids: &[&str]| {
        serde_json::to_vec(&serde_json::json!({
            "data": ids.iter().map(|i| serde_json::json!({"id": i, "version": 1})).collect::<Vec<_>>()
        }))
        .unwrap()
    };
    let job = |id: &str, query: &str, auth: Option<&str>, body: Vec<u8>| {
        call(
            reqwest::Method::POST,
            format!("{b}/v1/jobs?{query}"),
            auth.map(str::to_owned),
            vec![("idempotency-key", id.to_owned())],
            body,
        )
    };

    // 401 (no key, another scheme, an unknown key) with the challenge, and 403 (a client
    // without the operation, or for another source), each with a JSON reason.
    for (id, query, auth, status, code, why) in [
        (
            "r-none",
            "source=shop&stream=orders",
            None,
            401,
            "unauthenticated",
            "send an API key",
        ),
        (
            "r-basic",
            "source=shop&stream=orders",
            Some("Basic bGRyOng="),
            401,
            "unauthenticated",
            "not `Bearer <key>`",
        ),
        (
            "r-unknown",
            "source=shop&stream=orders",
            Some("Bearer ldr-7d0f0d8a2c4c"),
            401,
            "unauthenticated",
            "unknown API key",
        ),
        (
            "r-op",
            "source=shop&stream=orders",
            Some(uploader.as_str()),
            403,
            "forbidden",
            "`uploader` may not use jobs",
        ),
        (
            "r-src",
            "source=crm&stream=accounts",
            Some(loader.as_str()),
            403,
            "forbidden",
            "`loader` may not act for source `crm`",
        ),
    ] {
        let (s, challenge, v) = job(id, query, auth, batch(&["o1"])).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{id}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{id}: {v}");
        let expected = (status == 401).then_some("Bearer realm=\"intake\"");
        assert_eq!(challenge.as_deref(), expected, "{id}");
    }
    let blob = |name: &str, auth: Option<&str>, body: Vec<u8>| {
        call(
            reqwest::Method::PUT,
            format!("{b}/v1/blobs/{name}"),
            auth.map(str::to_owned),
            Vec::new(),
            body,
        )
    };
    let (s, _, v) = blob("by-loader.json", Some(&loader), batch(&["x"])).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, _, _) = blob("anonymous.json", None, batch(&["x"])).await;
    assert_eq!(s, 401);

    // Blob names are written once: the same content again is fine, other content is refused.
    let first = batch(&["o10", "o11", "o12"]);
    let (s, _, stored) = blob("orders.json", Some(&uploader), first.clone()).await;
    assert_eq!(s, 201, "{stored}");
    let (s, _, again) = blob("orders.json", Some(&uploader), first.clone()).await;
    assert_eq!((s, &again), (200, &stored), "the same content again");
    let (s, _, v) = blob("orders.json", Some(&uploader), batch(&["evil"])).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("blob_exists")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("exists with other content"),
        "{v}"
    );

    // The allowed client: inline and by reference, landed as before.
    let inline = batch(&["o1", "o2"]);
    let (s, _, j1) = job(
        "ok-inline",
        "source=shop&stream=orders",
        Some(&loader),
        inline.clone(),
    )
    .await;
    assert_eq!((s, &j1["records"]), (201, &serde_json::json!(2)), "{j1}");
    let (s, _, j2) = job(
        "ok-blob",
        "source=shop&stream=orders&blob=orders.json",
        Some(&loader),
        Vec::new(),
    )
    .await;
    assert_eq!((s, &j2["records"]), (201, &serde_json::json!(3)), "{j2}");
    // Reading a job needs the operation and its source too.
    let get = |id: &str, auth: Option<&str>| {
        call(
            reqwest::Method::GET,
            format!("{b}/v1/jobs/{id}"),
            auth.map(str::to_owned),
            Vec::new(),
            Vec::new(),
        )
    };
    let (s, _, v) = get("ok-inline", Some(&loader)).await;
    assert_eq!((s, &v), (200, &j1));
    assert_eq!(get("ok-inline", None).await.0, 401);
    assert_eq!(get("ok-inline", Some(&uploader)).await.0, 403);
    let (s, _, v) = get("ok-inline", Some(&format!("Bearer {crm_key}"))).await;
    assert_eq!(s, 403, "a job of another source: {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("`crm-reader` may not act for source `shop`"),
        "{v}"
    );
    for refused in ["r-none", "r-basic", "r-unknown", "r-op", "r-src"] {
        assert_eq!(get(refused, Some(&loader)).await.0, 404, "{refused} exists");
    }
    // No key in any answer or metric.
    let metrics = get_text(&format!("{b}/metrics")).await;
    assert!(
        metrics.contains("code=\"unauthenticated\""),
        "refusals counted"
    );
    for key in [loader_key, uploader_key, crm_key] {
        assert!(!metrics.contains(key));
        assert!(!j1.to_string().contains(key) && !stored.to_string().contains(key));
    }
    srv.stop().await;

    // Exactly the two allowed jobs landed, once each, as before; nothing of the refused ones.
    let names = TopicNames::from_config(&cfg);
    let landed = read_all(&names.landing(), "read_committed");
    let mut ids: Vec<&str> = landed
        .iter()
        .map(|r| r.header("intake.job_id").unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ok-blob", "ok-inline"]);
    let rec = |id: &str| {
        landed
            .iter()
            .find(|r| r.header("intake.job_id") == Some(id))
            .unwrap()
    };
    let r = rec("ok-inline");
    assert_eq!(r.header("intake.kind"), Some("batch"));
    assert_eq!(r.header("intake.source"), Some("shop"));
    assert_eq!(r.header("intake.stream"), Some("orders"));
    assert_eq!(r.key_str(), "shop/orders");
    assert_eq!(r.value.as_deref(), Some(inline.as_slice()));
    let r = rec("ok-blob");
    assert_eq!(r.header("intake.kind"), Some("blob-ref"));
    let b = intake::blob::BlobRef::parse_header(r.header("intake.blob").unwrap()).unwrap();
    assert_eq!(
        b.sha256,
        intake::blob::sha256_hex(&first),
        "the refused upload changed nothing"
    );
    let jobs = read_all(&names.jobs(), "read_committed");
    let mut ids: Vec<&str> = jobs.iter().map(|r| r.key_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ok-blob", "ok-inline"]);
    for r in landed.iter().chain(&jobs) {
        for (_, v) in &r.headers {
            let v = String::from_utf8_lossy(v);
            assert!(!v.contains(loader_key) && !v.contains(uploader_key));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_listener_takes_metrics_off_the_public_one() {
    let admin_port = support::e2e::free_port();
    let cfg = Arc::new(config(&format!(
        r#"
[serve]
admin_listen = "127.0.0.1:{admin_port}"
auth = "none"
{shop}"#,
        shop = keyed_source("shop", "", &[("orders", "")]),
    )));
    apply_topics(&cfg).await;
    let srv = Server::start(cfg.clone()).await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let status = |url: String| async move { reqwest::get(url).await.unwrap().status().as_u16() };
    assert_eq!(status(format!("{}/metrics", srv.base)).await, 404);
    assert_eq!(status(format!("{}/readyz", srv.base)).await, 200);
    assert_eq!(status(format!("{}/healthz", srv.base)).await, 200);
    let m = reqwest::get(format!("{admin}/metrics")).await.unwrap();
    assert_eq!(m.status().as_u16(), 200);
    // The public 404 above was counted, and shows here.
    assert!(m.text().await.unwrap().contains("code=\"not_found\""));
    assert_eq!(status(format!("{admin}/readyz")).await, 200);
    assert_eq!(status(format!("{admin}/healthz")).await, 200);
    assert_eq!(status(format!("{admin}/v1/jobs/x")).await, 404);
    assert_eq!(status(format!("{admin}/openapi.json")).await, 404);

    // `auth = "none"` (local demos): jobs without a key.
    let (s, _, v) = call(
        reqwest::Method::POST,
        format!("{}/v1/jobs?source=shop&stream=orders", srv.base),
        None,
        vec![("idempotency-key", "open-1".to_owned())],
        br#"{"data": [{"id": "o1", "version": 1}]}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    srv.stop().await;
    let landed = read_landing(&cfg);
    assert_eq!(landed.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_tls_is_verified_with_the_ca_and_refuses_plain_http() {
    let stack = secure_stack();
    let tls = |cert: &str, key: &str| {
        let mut cfg = (*serve_config()).clone();
        cfg.serve.tls = Some(intake::config::ServeTls {
            cert_file: stack.tls.join(cert),
            key_file: stack.tls.join(key),
        });
        Arc::new(cfg)
    };
    let start = |cfg: Arc<Config>| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = stop_signal();
        let task = tokio::spawn(intake::serve::run(cfg, listener, rx));
        (port, tx, task)
    };

    // A key that does not exist, or one that is not the certificate's: start-up ends at once,
    // naming the setting.
    let (_, _tx, task) = start(tls("broker.pem", "no-such.key")).await;
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("serve.tls.key_file"), "{err}");
    let (_, _tx, task) = start(tls("broker.pem", "client.key")).await;
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(err.starts_with("serve.tls:"), "{err}");

    // The stack's server certificate (for 127.0.0.1, signed by the stack's CA).
    let cfg = tls("broker.pem", "broker.key");
    apply_topics(&cfg).await;
    let (port, stop, task) = start(cfg.clone()).await;
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(stack.tls.join("ca.pem")).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match trusting.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => {
                if task.is_finished() {
                    panic!("serve stopped: {:?} ({other:?})", task.await);
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never ready: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // A client that does not trust the CA, and one speaking plain HTTP, get nowhere.
    let untrusting = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    // A signed webhook over HTTPS lands, read back from the landing topic.
    let body = event("e-tls", "cus_tls", 1);
    let r = signed_webhook(&trusting, &base, "shop", SECRET, body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let landed = read_landing(&cfg);
    let ids: Vec<&str> = landed
        .iter()
        .filter_map(|r| r.header("intake.event_id"))
        .collect();
    assert_eq!(ids, ["e-tls"]);
}
