//! The admin API: the ground truth, the counters, and run-time control. Unauthenticated (the
//! simulator is a test fixture; bind it to localhost) and never subject to quota or faults.
//!
//! | method and path                 | what |
//! |---------------------------------|------|
//! | `GET /admin/truth`              | per stream: live records with versions, deleted ids, drifted, large, backdated ids |
//! | `GET /admin/stats`              | per-token request counts and per-second histogram; pages, `result_cap_refusals`; faults; writer; webhooks |
//! | `PUT /admin/quota/{token}`      | `{"limit": n}`: set (or create) a token's limit |
//! | `GET`/`PUT /admin/faults`       | read, or partly change, the fault rates |
//! | `POST /admin/pause`, `/resume`  | stop or restart the background writer |
//! | `POST /admin/writes?n=&stream=` | make `n` writes now, paused or not |
//! | `POST /admin/webhooks/send?n=`  | make `n` customer/order writes now, each sending a webhook |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::info;

use super::args::{DriftKind, QuotaMode};
use super::clock::{self, format_ms};
use super::data::Stream;
use super::error::ApiError;
use super::faults::{FaultConfig, FaultCounts};
use super::pagination::whole_in;
use super::quota::TokenStats;
use super::state::SimState;
use super::store::{Change, StreamTruth, WriteCounts};
use super::webhooks::WebhookCounts;

/// Most writes one admin call may ask for.
const MAX_WRITES_PER_CALL: usize = 100_000;

/// The admin routes.
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/admin/truth", get(truth))
        .route("/admin/stats", get(stats))
        .route("/admin/quota/{token}", put(set_quota))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/pause", post(pause))
        .route("/admin/resume", post(resume))
        .route("/admin/writes", post(writes))
        .route("/admin/webhooks/send", post(send_webhooks))
}

#[derive(Serialize)]
struct LiveOut<'a> {
    version: u64,
    record: &'a RawValue,
}

#[derive(Serialize)]
struct DeletedOut {
    version: u64,
    deleted_at: String,
}

#[derive(Serialize)]
struct StreamOut<'a> {
    live: BTreeMap<&'a str, LiveOut<'a>>,
    deleted: BTreeMap<&'a str, DeletedOut>,
    drifted: BTreeMap<&'a str, DriftKind>,
    large: &'a [String],
    backdated: &'a [String],
}

#[derive(Serialize)]
struct TruthOut<'a> {
    seed: u64,
    paused: bool,
    writes: u64,
    streams: BTreeMap<&'static str, StreamOut<'a>>,
}

fn stream_out(truth: &StreamTruth) -> StreamOut<'_> {
    StreamOut {
        live: truth
            .live
            .iter()
            .map(|(id, version, json)| {
                let record = serde_json::from_str(json).expect("stored records are JSON");
                (
                    id.as_str(),
                    LiveOut {
                        version: *version,
                        record,
                    },
                )
            })
            .collect(),
        deleted: truth
            .deleted
            .iter()
            .map(|(id, tomb)| {
                (
                    id.as_str(),
                    DeletedOut {
                        version: tomb.version,
                        deleted_at: format_ms(tomb.deleted_ms),
                    },
                )
            })
            .collect(),
        drifted: truth
            .drifted
            .iter()
            .map(|(id, kind)| (id.as_str(), *kind))
            .collect(),
        large: &truth.large,
        backdated: &truth.backdated,
    }
}

/// `GET /admin/truth`: a consistent snapshot of every stream (one read lock).
async fn truth(State(state): State<Arc<SimState>>) -> Response {
    let (truths, paused, writes) = {
        let store = state.store();
        (
            Stream::ALL.map(|s| store.truth(s)),
            store.paused,
            store.writes(),
        )
    };
    let out = TruthOut {
        seed: state.seed,
        paused,
        writes,
        streams: Stream::ALL
            .iter()
            .zip(&truths)
            .map(|(stream, truth)| (stream.as_str(), stream_out(truth)))
            .collect(),
    };
    let body = serde_json::to_vec(&out).expect("the truth serializes");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Serialize)]
struct QuotaOut {
    mode: QuotaMode,
    window_ms: u64,
}

#[derive(Serialize)]
struct WriterOut {
    paused: bool,
    writes: u64,
    #[serde(flatten)]
    counts: WriteCounts,
}

#[derive(Serialize)]
struct StatsOut {
    uptime_ms: u64,
    quota: QuotaOut,
    tokens: BTreeMap<String, TokenStats>,
    unauthorized: u64,
    oidc_accepted: u64,
    sessions: Option<super::session::SessionCounts>,
    pages: u64,
    compressed: u64,
    result_cap_refusals: u64,
    exports: serde_json::Value,
    faults: FaultCounts,
    writer: WriterOut,
    webhooks: Option<WebhookCounts>,
}

/// `GET /admin/stats`.
async fn stats(State(state): State<Arc<SimState>>) -> Json<impl Serialize> {
    let writer = {
        let store = state.store();
        WriterOut {
            paused: store.paused,
            writes: store.writes(),
            counts: store.counts(),
        }
    };
    Json(StatsOut {
        uptime_ms: state.started.elapsed().as_millis() as u64,
        quota: QuotaOut {
            mode: state.quota_mode,
            window_ms: state.quota_window_ms,
        },
        tokens: state.quotas().stats(),
        unauthorized: state.counters.unauthorized.load(Ordering::SeqCst),
        oidc_accepted: state.counters.oidc_accepted.load(Ordering::SeqCst),
        sessions: state
            .sessions
            .as_ref()
            .map(super::session::Sessions::counts),
        pages: state.counters.pages.load(Ordering::SeqCst),
        compressed: state.counters.compressed.load(Ordering::SeqCst),
        result_cap_refusals: state.counters.result_cap_refusals.load(Ordering::SeqCst),
        exports: serde_json::to_value(state.exports.counters()).unwrap_or_default(),
        faults: state.faults().counts(),
        writer,
        webhooks: state.webhooks.as_ref().map(|q| q.counters().snapshot()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaIn {
    limit: u32,
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_body(e.to_string()))
}

/// `PUT /admin/quota/{token}` with `{"limit": n}`.
async fn set_quota(
    State(state): State<Arc<SimState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let QuotaIn { limit } = json_body(&body)?;
    state.quotas().set_limit(&token, limit, clock::now());
    info!(limit, "sim quota changed");
    Ok(Json(serde_json::json!({ "token": token, "limit": limit })))
}

/// `GET /admin/faults`.
async fn get_faults(State(state): State<Arc<SimState>>) -> Json<FaultConfig> {
    Json(state.faults().config().clone())
}

/// `PUT /admin/faults` with any of the [`FaultConfig`] fields.
async fn put_faults(
    State(state): State<Arc<SimState>>,
    body: Bytes,
) -> Result<Json<FaultConfig>, ApiError> {
    let patch: serde_json::Map<String, serde_json::Value> = json_body(&body)?;
    let mut faults = state.faults();
    faults.apply(&patch).map_err(ApiError::bad_body)?;
    info!(config = ?faults.config(), "sim faults changed");
    Ok(Json(faults.config().clone()))
}

fn set_paused(state: &SimState, paused: bool) -> Json<serde_json::Value> {
    let writes = {
        let mut store = state.store_mut();
        store.paused = paused;
        store.writes()
    };
    info!(paused, writes, "sim writer");
    Json(serde_json::json!({ "paused": paused, "writes": writes }))
}

/// `POST /admin/pause`: when it answers, no background write will happen until resumed.
async fn pause(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    set_paused(&state, true)
}

/// `POST /admin/resume`.
async fn resume(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    set_paused(&state, false)
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn count_param(params: &BTreeMap<String, String>) -> Result<usize, ApiError> {
    match params.get("n") {
        None => Ok(1),
        Some(n) => whole_in(n, 1..=MAX_WRITES_PER_CALL).ok_or_else(|| {
            ApiError::bad_param(format!(
                "n must be a whole number in 1..={MAX_WRITES_PER_CALL}"
            ))
        }),
    }
}

#[derive(Serialize)]
struct ChangesOut {
    changes: Vec<Change>,
}

/// `POST /admin/writes?n=&stream=`: `n` (default 1) writes to `stream` (default: all).
async fn writes(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<ChangesOut>, ApiError> {
    let params = query_map(query.as_deref());
    let n = count_param(&params)?;
    let streams: Vec<Stream> = match params.get("stream") {
        None => Stream::ALL.to_vec(),
        Some(s) => vec![s.parse().map_err(ApiError::bad_param)?],
    };
    Ok(Json(ChangesOut {
        changes: state.write_now(&streams, n).await,
    }))
}

/// `POST /admin/webhooks/send?n=`: `n` (default 1) customer/order writes, each sending its
/// webhook. 409 when webhooks are off.
async fn send_webhooks(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<ChangesOut>, ApiError> {
    if state.webhooks.is_none() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "webhooks_disabled",
            message: "start the simulator with --webhook-url and --webhook-secret".into(),
        });
    }
    let n = count_param(&query_map(query.as_deref()))?;
    Ok(Json(ChangesOut {
        changes: state
            .write_now(&[Stream::Customers, Stream::Orders], n)
            .await,
    }))
}
