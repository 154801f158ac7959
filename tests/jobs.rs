//! Issue 7: `GET /v1/jobs/{id}` reports counts landed, valid and dead-lettered that match what
//! validate did, exactly, through a replay and a restart of serve.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use intake::config::Config;
use intake::dlq::propose;
use intake::headers;
use intake::topics::TopicNames;
use serde_json::{Value as Json, json};
use support::*;

/// serve, with the job look-ups of these tests.
struct Server(Serve);

impl Server {
    async fn start(cfg: Arc<Config>) -> Self {
        Self(Serve::start(cfg).await)
    }

    async fn stop(self) {
        self.0.stop().await;
    }

    async fn job(&self, id: &str) -> Json {
        let r = serve_http()
            .get(format!("{}/v1/jobs/{id}", self.0.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET job {id}");
        r.json().await.unwrap()
    }

    /// Polls a job until its counts (and state) are the expected ones, or fails with the last
    /// (30 s at most, every 200 ms: [`support::scenario::wait_job`]).
    async fn wait_counts(&self, id: &str, counts: Json, state: &str) -> Json {
        support::scenario::wait_job(
            id,
            &counts,
            state,
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || self.job(id).await,
        )
        .await
    }
}

fn counts(landed: u64, valid: u64, dead: u64, replayed: u64, pending: u64) -> Json {
    json!({"landed": landed, "valid": valid, "dead_lettered": dead, "replayed": replayed, "pending": pending})
}

async fn submit(base: &str, id: &str, query: &str, body: Vec<u8>) -> (u16, Json) {
    let r = serve_http()
        .post(format!("{base}/v1/jobs?source=sim&stream=customers{query}"))
        .header("Idempotency-Key", id)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn customer(id: &str) -> Json {
    json!({"id": id, "name": "Ada", "email": "ada@example.com", "status": "active", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z", "version": 1})
}

fn with(mut v: Json, k: &str, x: Json) -> Json {
    v[k] = x;
    v
}

fn batch(records: &[Json]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "data": records })).unwrap()
}

/// Runs validate until the committed valid and DLQ topics hold `valid` and `dead` records.
async fn validate_until_counts(cfg: &Arc<Config>, valid: usize, dead: usize) {
    let names = TopicNames::from_config(cfg);
    let (vt, dt) = (names.valid("sim", "customers"), names.dlq());
    let what = format!("{valid} valid and {dead} dead letters");
    let out = validate_until(cfg, &[vt.clone(), dt.clone()], &what, |o| {
        o[&vt].len() >= valid && o[&dt].len() >= dead
    })
    .await;
    assert_eq!(
        (out[&vt].len(), out[&dt].len()),
        (valid, dead),
        "validate wrote more than expected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn job_counts_match_what_validate_and_replays_did_exactly() {
    let cfg = Arc::new(config(&format!(
        "{}\n{}",
        keyed_source("sim", "", &[("customers", "")]),
        serve_client()
    )));
    let names = TopicNames::from_config(&cfg);
    apply_topics_and_schemas(&cfg).await;
    let srv = Server::start(cfg.clone()).await;

    // job-1: 5 valid customers, 2 with a renamed enum value, 1 with a number for an email.
    let mut records: Vec<Json> = (1..=5).map(|i| customer(&format!("a-{i}"))).collect();
    records.push(with(customer("a-6"), "status", json!("enabled")));
    records.push(with(customer("a-7"), "status", json!("disabled")));
    records.push(with(customer("a-8"), "email", json!(42)));
    let (s, j1) = submit(&srv.0.base, "job-1", "", batch(&records)).await;
    assert_eq!(s, 201, "{j1}");
    assert_eq!(
        j1["counts"],
        counts(8, 0, 0, 0, 8),
        "landed, none validated yet"
    );
    srv.wait_counts("job-1", counts(8, 0, 0, 0, 8), "landed")
        .await;
    // job-2: two valid ones.
    let job_2 = batch(&[customer("b-1"), customer("b-2")]);
    let (s, _) = submit(&srv.0.base, "job-2", "", job_2.clone()).await;
    assert_eq!(s, 201);
    // job-3, by reference: its upload is altered in the store after submission (the API
    // refuses to replace it), so validate finds a blob whose sha256 does not match and
    // dead-letters the batch whole.
    let put = |body: Vec<u8>| {
        serve_http()
            .put(format!("{}/v1/blobs/job-3.json", srv.0.base))
            .body(body)
            .send()
    };
    assert_eq!(
        put(batch(&[customer("c-1"), customer("c-2"), customer("c-3")]))
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let (s, j3) = submit(&srv.0.base, "job-3", "&blob=job-3.json", Vec::new()).await;
    assert_eq!(s, 201, "{j3}");
    assert_eq!(j3["records"], 3);
    assert_eq!(
        put(batch(&[customer("x")]))
            .await
            .unwrap()
            .status()
            .as_u16(),
        409
    );
    let stored = std::path::Path::new(cfg.blob.url.strip_prefix("file://").unwrap())
        .join("uploads/job-3.json");
    std::fs::write(&stored, batch(&[customer("x")])).unwrap();

    // Validate: 7 valid (job-1's 5, job-2's 2), 4 dead letters (job-1's 3, job-3 whole).
    validate_until_counts(&cfg, 7, 4).await;
    srv.wait_counts("job-1", counts(8, 5, 3, 0, 0), "validated")
        .await;
    srv.wait_counts("job-2", counts(2, 2, 0, 0, 0), "validated")
        .await;
    srv.wait_counts("job-3", counts(3, 0, 3, 0, 0), "validated")
        .await;

    // One count delta per job landing record, written with validate's outputs.
    let deltas = |recs: &[Rec]| -> BTreeMap<String, Vec<Json>> {
        let mut by_job: BTreeMap<String, Vec<Json>> = BTreeMap::new();
        for r in recs {
            let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            if v["type"] == "counts" {
                assert!(r.key_str().starts_with("~counts/"), "{}", r.key_str());
                by_job
                    .entry(v["job_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(v);
            }
        }
        by_job
    };
    let jobs_topic = read_all(&names.jobs(), "read_committed");
    let d = deltas(&jobs_topic);
    assert_eq!(d.keys().collect::<Vec<_>>(), ["job-1", "job-2", "job-3"]);
    assert!(d.values().all(|v| v.len() == 1), "{d:?}");
    assert_eq!(
        (
            &d["job-1"][0]["valid"],
            &d["job-1"][0]["dead_lettered"],
            &d["job-3"][0]["dead_lettered_whole"]
        ),
        (&json!(5), &json!(3), &json!(1))
    );

    // Fix the enum, replay: the job's two renamed-enum records move to the valid topic.
    let p = propose::run(&cfg, "sim/customers", Some("unknown_enum"), true)
        .await
        .unwrap();
    assert!(p.applied.is_some(), "{p:?}");
    let r = replay_kind(&cfg, "unknown_enum").await.unwrap();
    assert_eq!((r.landed, r.jobs), (2, 1), "{r:?}");
    srv.wait_counts("job-1", counts(8, 5, 1, 2, 2), "validating")
        .await;
    let landing = read_all(&names.landing(), "read_committed");
    assert_eq!(
        landing
            .iter()
            .filter(|r| r.header(headers::REPLAY_ID).is_some()
                && r.header(headers::JOB_ID) == Some("job-1")
                && r.header(headers::KIND) == Some("batch"))
            .count(),
        2,
        "the replayed records keep their job"
    );
    validate_until_counts(&cfg, 9, 4).await;
    srv.wait_counts("job-1", counts(8, 7, 1, 2, 0), "validated")
        .await;
    srv.stop().await;

    // A restarted server restores the counts from intake.jobs.
    let srv = Server::start(cfg.clone()).await;
    assert_eq!(srv.job("job-1").await["counts"], counts(8, 7, 1, 2, 0));
    assert_eq!(srv.job("job-2").await["counts"], counts(2, 2, 0, 0, 0));
    assert_eq!(srv.job("job-3").await["counts"], counts(3, 0, 3, 0, 0));
    assert_eq!(srv.job("job-3").await["state"], "validated");
    // Resubmitting returns the job with its counts, landing nothing new.
    let (s, again) = submit(&srv.0.base, "job-2", "", job_2).await;
    assert_eq!(s, 200);
    assert_eq!(again["counts"], counts(2, 2, 0, 0, 0));
    srv.stop().await;
    let deltas_after = deltas(&read_all(&names.jobs(), "read_committed"));
    // The batch, the replay, and each re-landed record (a page of its own).
    assert_eq!(deltas_after["job-1"].len(), 1 + 1 + 2);
    assert_eq!(deltas_after["job-2"].len(), 1);
}
