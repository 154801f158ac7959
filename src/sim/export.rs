//! Asynchronous exports, as bulk APIs (Shopify bulk operations, Salesforce Bulk 2.0) serve
//! them: a request creates an export of a stream's live records (a snapshot at that moment),
//! its state is `running` for the first `--export-polls` looks and then `completed` with the
//! URLs of its files (`--export-file-records` records each, JSON Lines or CSV as the creating
//! request's `?format=` asked), and a `DELETE` removes it (its state and files then answer 404).
//!
//! - `POST /v1/exports/{stream}[?format=jsonl|csv]` → 201 `{"id": "exp_1", "status": "created"}`
//! - `GET /v1/exports/{id}` → `{"id", "status": "running"}`, then `{"id", "status":
//!   "completed", "record_count", "files": ["/v1/exports/{id}/files/0", ...]}`
//! - `GET /v1/exports/{id}/files/{n}` → the file
//! - `DELETE /v1/exports/{id}` → 204
//!
//! The routes sit behind the list APIs' guard (bearer token, quota, faults) and compression.
//! `GET /admin/stats` counts them (`exports`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::data::Stream;
use super::error::ApiError;
use super::pagination::BodyFormat;
use super::state::SimState;
use super::store::{Filter, Listed};

/// The exports of one simulator.
#[derive(Debug)]
pub struct Exports {
    live: Mutex<HashMap<String, Export>>,
    /// Looks at a new export's state that still find it running.
    polls_before_ready: u32,
    /// Records per file.
    file_records: usize,
    counters: ExportCounters,
}

#[derive(Debug)]
struct Export {
    records: Vec<Listed>,
    format: BodyFormat,
    polls: u32,
}

/// What the export routes did (`GET /admin/stats`, `exports`).
#[derive(Debug, Default, Serialize)]
pub struct ExportCounters {
    /// Exports created.
    pub created: AtomicU64,
    /// Looks at a state.
    pub polls: AtomicU64,
    /// Files served.
    pub files: AtomicU64,
    /// Records in the files served.
    pub records: AtomicU64,
    /// Exports deleted.
    pub deleted: AtomicU64,
}

impl Exports {
    /// Exports ready after `polls_before_ready` looks, in files of `file_records` records.
    pub fn new(polls_before_ready: u32, file_records: usize) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            polls_before_ready,
            file_records: file_records.max(1),
            counters: ExportCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &ExportCounters {
        &self.counters
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Export>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The export routes (guarded and compressed with the list APIs, see `api::router`).
pub fn api() -> Router<Arc<SimState>> {
    // One path: a stream's name to create an export, an export's id to read or delete it.
    Router::new()
        .route(
            "/v1/exports/{name}",
            post(create).get(status).delete(delete),
        )
        .route("/v1/exports/{name}/files/{n}", get(file))
}

async fn create(
    State(state): State<Arc<SimState>>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let stream: Stream = stream.parse().map_err(ApiError::not_found)?;
    let format = match url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.into_owned())
        .as_deref()
    {
        None | Some("jsonl") => BodyFormat::Jsonl,
        Some("csv") => BodyFormat::Csv,
        Some(other) => {
            return Err(ApiError::bad_param(format!(
                "format must be jsonl or csv, got '{other}'"
            )));
        }
    };
    let (records, _) = state
        .store()
        .page_at(stream, Filter::default(), 0, usize::MAX);
    let exports = &state.exports;
    let n = exports.counters.created.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("exp_{n}");
    exports.live().insert(
        id.clone(),
        Export {
            records,
            format,
            polls: 0,
        },
    );
    let body = serde_json::json!({"id": id, "status": "created"});
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn status(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let exports = &state.exports;
    exports.counters.polls.fetch_add(1, Ordering::SeqCst);
    let mut live = exports.live();
    let export = live
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found(format!("no export '{id}'")))?;
    export.polls += 1;
    let body = if export.polls <= exports.polls_before_ready {
        serde_json::json!({"id": id, "status": "running"})
    } else {
        let files: Vec<String> = (0..export.records.len().div_ceil(exports.file_records))
            .map(|n| format!("/v1/exports/{id}/files/{n}"))
            .collect();
        serde_json::json!({"id": id, "status": "completed", "record_count": export.records.len(), "files": files})
    };
    Ok(axum::Json(body).into_response())
}

async fn file(
    State(state): State<Arc<SimState>>,
    Path((id, n)): Path<(String, usize)>,
) -> Result<Response, ApiError> {
    let exports = &state.exports;
    let live = exports.live();
    let export = live
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no export '{id}'")))?;
    let from = n.saturating_mul(exports.file_records);
    if from >= export.records.len() {
        return Err(ApiError::not_found(format!(
            "export '{id}' has no file {n}"
        )));
    }
    let part = &export.records[from..(from + exports.file_records).min(export.records.len())];
    exports.counters.files.fetch_add(1, Ordering::SeqCst);
    exports
        .counters
        .records
        .fetch_add(part.len() as u64, Ordering::SeqCst);
    let body = super::pagination::write_records(part, export.format);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, export.format.content_type())],
        body,
    )
        .into_response())
}

async fn delete(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let exports = &state.exports;
    exports
        .live()
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(format!("no export '{id}'")))?;
    exports.counters.deleted.fetch_add(1, Ordering::SeqCst);
    Ok(StatusCode::NO_CONTENT.into_response())
}
