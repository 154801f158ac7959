//! Steps that several end-to-end tests take alike:
//!
//! - [`paused_sim`], [`paused_sim_with_webhooks`]: the simulator of an end-to-end run, paused
//!   until the test resumes it (`tests/pipeline.rs`, `tests/judges.rs`, `tests/large.rs`);
//! - [`settled_after_pause`]: the end of a run whose simulator writer paused — a sync after the
//!   pause, the truth, the curated topics converged on it and what was committed twice
//!   (`tests/chaos.rs`, `tests/soak.rs`);
//! - [`wait_job`]: a batch job polled until its counts and state are the expected ones
//!   (`tests/jobs.rs`, `tests/chaos.rs`);
//! - [`sim_as`]: a request to the simulator's API as a client with a bearer token
//!   (`tests/fixtures.rs`, `tests/oauth.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use intake::config::Config;
use intake::verify::VerifyReport;

use super::e2e;

/// Starts the simulator for an end-to-end run: `records` per stream, the token `demo` at 100
/// requests/s, paused until the test resumes it, and `flags` besides (a command line's words,
/// split at white space).
pub async fn paused_sim(records: u32, flags: &str) -> intake::sim::SimHandle {
    let records = records.to_string();
    let mut argv = vec![
        "--records",
        &records,
        "--token",
        "demo=100",
        "--start-paused",
    ];
    argv.extend(flags.split_whitespace());
    super::sim(&argv).await
}

/// [`paused_sim`], sending its webhooks, signed with [`e2e::WEBHOOK_SECRET`], to serve at a
/// free port (`/v1/webhooks/sim`): the simulator and that port.
pub async fn paused_sim_with_webhooks(records: u32, flags: &str) -> (intake::sim::SimHandle, u16) {
    let serve_port = e2e::free_port();
    let webhooks = format!(
        "--webhook-url http://127.0.0.1:{serve_port}/v1/webhooks/sim --webhook-secret {} {flags}",
        e2e::WEBHOOK_SECRET
    );
    (paused_sim(records, &webhooks).await, serve_port)
}

/// The end of a run whose simulator writer paused at `paused_at` (`paused`: the simulator's
/// answer to the pause). Waits until every stream completed a sync that started after the
/// pause (180 s without a page committed fail the test with `context()`), takes the
/// simulator's truth — asserting no write came after the pause — and converges the curated
/// topics on it (120 s without change end the wait; a diagnosis of `logs` is printed when
/// they differ). Returns the truth, the last comparison and what was committed twice, for
/// the caller to judge.
pub async fn settled_after_pause(
    cfg: &Config,
    sim: &intake::sim::SimHandle,
    paused: &serde_json::Value,
    paused_at: time::OffsetDateTime,
    logs: &[PathBuf],
    context: impl Fn() -> String,
) -> (serde_json::Value, VerifyReport, e2e::Doubles) {
    e2e::wait_for_syncs_after(cfg, paused_at, Duration::from_secs(180), context).await;
    let truth = super::truth(sim).await;
    assert_eq!(
        truth["writes"], paused["writes"],
        "no write after the pause"
    );
    let report = e2e::converge(cfg, &truth, Duration::from_secs(120)).await;
    if !e2e::equal(&report) {
        println!("{}", e2e::diagnose(cfg, logs).await);
    }
    let doubles = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || e2e::doubles(&cfg))
            .await
            .unwrap()
    };
    (truth, report, doubles)
}

/// Polls the batch job `id` — each look-up by `job`, every `every` — until its `counts` are
/// `counts` and its `state` is `state`; fails the test with the last answer once `within`
/// passed. Returns the job's last answer.
pub async fn wait_job(
    id: &str,
    counts: &serde_json::Value,
    state: &str,
    within: Duration,
    every: Duration,
    mut job: impl AsyncFnMut() -> serde_json::Value,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let j = job().await;
        if j["counts"] == *counts && j["state"] == state {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id}: expected {state} {counts}, have {} {}",
            j["state"],
            j["counts"]
        );
        tokio::time::sleep(every).await;
    }
}

/// GETs `path` of the simulator's API as a client with the bearer `token`: the response,
/// whatever its status.
pub async fn sim_as(sim: &intake::sim::SimHandle, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(sim.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}
