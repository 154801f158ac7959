//! serve: signed webhooks and idempotent batch jobs over HTTP, landed exactly once.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/webhooks/{source}` | verify the HMAC signature (two secrets during rotation, replay window), refuse a signed request seen before ([`replay`]), land the raw event |
//! | `POST /v1/jobs` | an idempotent batch (`Idempotency-Key` or `?job_id=`), inline or `?blob=<name>` |
//! | `GET /v1/jobs/{id}` | a job's state and counts |
//! | `PUT /v1/blobs/{name}` | upload a large batch for a job by reference (write-once names) |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` | liveness, readiness (Kafka), Prometheus, the API description |
//!
//! Jobs and blobs need an API key of a `[[serve.clients]]` entry allowed the operation and the
//! source ([`auth`]); webhooks authenticate with their signature. With `serve.admin_listen`
//! set, `/healthz`, `/readyz` and `/metrics` are served there too and `/metrics` only there.
//!
//! A 2xx means the data is committed in Kafka ([`lander`]). Errors are JSON
//! `{"error": code, "message": reason}` with the status a client can act on: 400 bad input,
//! 401 bad signature or no valid API key, 403 a client without the right, 404 unknown source,
//! 409 a job id reused with other content, a webhook whose identical delivery is landing at
//! this moment or a blob name taken by other content, 413 too large, 415 a body labelled other than JSON, 503 Kafka unavailable (nothing
//! acknowledged; retry).

mod auth;
mod events;

pub mod lander;
mod openapi;
pub mod replay;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::blob::BlobStore;
use crate::config::{Config, ConfigError, SecretString, ServeOperation};
use crate::contract::{LandedBody, LandingHeaders};
use crate::headers::{self, Headers, Kind};
use crate::jobs;
use crate::kafka::Kafka;
use crate::topics::TopicNames;
use lander::{LandError, Landing, ToLand};

/// Uploads (`PUT /v1/blobs`) may be this much larger than inline bodies.
const MAX_UPLOAD_BYTES: usize = 512 * 1024 * 1024;

struct ServeState {
    cfg: Arc<Config>,
    names: TopicNames,
    queue: mpsc::Sender<Landing>,
    ready: watch::Receiver<bool>,
    jobs: jobs::JobRegistry,
    blobs: BlobStore,
    hooks: HashMap<String, Hook>,
    ack_wait: Duration,
    replays: replay::ReplayGuard,
    clients: auth::Clients,
}

/// serve failures at start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration or secrets.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Blob store.
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    /// The listener.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    /// `[serve.tls]` cannot be used.
    #[error("{field}: {reason}")]
    Tls {
        /// The config field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A listener address cannot be bound.
    #[error("binding {field} {addr}: {source}")]
    Bind {
        /// The config field.
        field: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A webhook source, resolved at start.
struct Hook {
    scheme: crate::signing::Scheme,
    secrets: Vec<SecretString>,
    tolerance_secs: i64,
    map: events::EventMap,
}

/// An error answer.
#[derive(Debug)]
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(crate::telemetry::metric::SERVE_REJECTED, "code" => self.1).increment(1);
        let mut r = (
            self.0,
            Json(serde_json::json!({ "error": self.1, "message": self.2 })),
        )
            .into_response();
        if self.1 == auth::UNAUTHENTICATED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(auth::CHALLENGE),
            );
        }
        r
    }
}

impl From<LandError> for ApiError {
    fn from(e: LandError) -> Self {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("not acknowledged: {e}"),
        )
    }
}

/// Serves until `shutdown` resolves, then stops accepting and finishes in-flight transactions.
///
/// # Errors
/// Configuration, Kafka client creation, blob store, or the listener.
pub async fn run(
    cfg: Arc<Config>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    crate::telemetry::prometheus();
    // A certificate or key that cannot be used ends start-up at once, naming the setting.
    let tls = match &cfg.serve.tls {
        Some(t) => Some(tls_config(t).await?),
        None => None,
    };
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(&cfg);
    let mut hooks = HashMap::new();
    for (i, s) in cfg.sources.iter().enumerate() {
        if let Some(w) = &s.webhook {
            let at = format!("sources[{i}].webhook");
            let secrets = w
                .secrets
                .iter()
                .map(|r| r.resolve_field(format!("{at}.secrets")))
                .collect::<Result<Vec<_>, _>>()?;
            let tolerance = w.signature.tolerance.unwrap_or(cfg.serve.webhook_tolerance);
            hooks.insert(
                s.name.clone(),
                Hook {
                    scheme: w.scheme(&at)?,
                    secrets,
                    tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
                    map: events::EventMap::new(s, w, &at)?,
                },
            );
        }
    }
    let clients = auth::Clients::resolve(&cfg.serve)?;
    let admin = match &cfg.serve.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    field: "serve.admin_listen",
                    addr: addr.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    // Started while the brokers are away (a network fault, a leader moving), it waits for them.
    let jobs_topic = names.jobs();
    let jobs = crate::kafka::retry::retrying("restore the job registry", || {
        jobs::JobRegistry::restore(&kafka, &jobs_topic)
    })
    .await?;
    tracing::info!(jobs = jobs.len(), "job registry restored");
    let txn_id = crate::kafka::txn::transactional_id(
        &cfg.kafka.group_prefix,
        crate::kafka::txn::Writer::Serve {
            instance: &cfg.instance_id(),
        },
    );
    let (queue, task, ready) = lander::start(&kafka, &txn_id)?;
    let state = Arc::new(ServeState {
        blobs: BlobStore::open(&cfg.blob)?,
        ack_wait: cfg.kafka.transaction_timeout + Duration::from_secs(5),
        cfg: cfg.clone(),
        names,
        queue,
        ready,
        jobs,
        hooks,
        replays: replay::ReplayGuard::new(cfg.serve.webhook_tolerance),
        clients,
    });
    let admin = match admin {
        Some(l) => {
            tracing::info!(addr = %l.local_addr()?, "serve admin listening (/healthz, /readyz, /metrics)");
            let app = admin_router(state.clone());
            Some(tokio::spawn(async move { axum::serve(l, app).await }))
        }
        None => None,
    };
    let app = router(state, cfg.serve.max_body_bytes, admin.is_none());
    tracing::info!(addr = %listener.local_addr()?, "serve listening");
    let served = match &cfg.serve.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(_) => {
            let tls = tls.expect("loaded above when configured");
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(listener.into_std()?, tls)
                .handle(handle.clone())
                .serve(app.into_make_service());
            tokio::pin!(server);
            tokio::select! {
                r = &mut server => r,
                () = shutdown => {
                    handle.graceful_shutdown(None);
                    server.await
                }
            }
        }
    };
    if let Some(a) = admin {
        a.abort();
        let _ = a.await;
    }
    served?;
    // The router (and with it the queue's sender) is gone: the lander answers what it holds.
    let _ = task.await;
    tracing::info!("serve stopped; in-flight transactions finished");
    Ok(())
}

/// The rustls server configuration of `[serve.tls]`.
async fn tls_config(
    t: &crate::config::ServeTls,
) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    // Two crypto providers are linked (through different dependencies); rustls wants the
    // process to pick one. Already picked: fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for (field, path) in [
        ("serve.tls.cert_file", &t.cert_file),
        ("serve.tls.key_file", &t.key_file),
    ] {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ServeError::Tls {
                field,
                reason: format!("{}: {e}", path.display()),
            });
        }
    }
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert_file, &t.key_file)
        .await
        .map_err(|e| ServeError::Tls {
            field: "serve.tls",
            reason: format!(
                "the certificate ({}) and key ({}) cannot be used: {e}",
                t.cert_file.display(),
                t.key_file.display()
            ),
        })
}

/// Liveness and readiness, on both listeners.
fn health_routes() -> Router<Arc<ServeState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

/// The operators' routes: liveness, readiness and metrics.
fn admin_router(state: Arc<ServeState>) -> Router {
    health_routes()
        .merge(crate::telemetry::metrics_router())
        .with_state(state)
}

/// The public routes; `/metrics` only when no admin listener has it.
fn router(state: Arc<ServeState>, max_body: usize, with_metrics: bool) -> Router {
    let r = Router::new()
        .route(
            "/v1/webhooks/{source}",
            post(webhook).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(
            "/v1/jobs",
            post(submit_job).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/v1/jobs/{id}", get(get_job))
        .route(
            "/v1/blobs/{name}",
            put(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .merge(health_routes())
        .route("/openapi.json", get(|| async { Json(openapi::document()) }));
    let r = if with_metrics {
        r.merge(crate::telemetry::metrics_router())
    } else {
        r
    };
    r.fallback(|| async {
        ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /openapi.json".into(),
        )
    })
    .with_state(state)
}

async fn readyz(State(st): State<Arc<ServeState>>) -> Response {
    if *st.ready.borrow() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "kafka not ready").into_response()
    }
}

/// Refuses a body labelled with a media type other than JSON (`application/json` or
/// `application/*+json`) with 415; an unlabelled body is read as JSON.
fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(v.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        return Ok(());
    }
    let shown: String = text.chars().take(100).collect();
    Err(ApiError(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type {shown:?} is not JSON; send application/json"),
    ))
}

/// Parses a JSON body: 400 `not_utf8` or `malformed_json` (with line and column; nesting
/// deeper than serde_json's recursion limit is an error, never a stack overflow).
fn parse_json(body: &[u8], what: &str) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| match std::str::from_utf8(body) {
        Err(u) => ApiError(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            format!(
                "{what} is not UTF-8 JSON: invalid byte at offset {}",
                u.valid_up_to()
            ),
        ),
        Ok(_) => ApiError(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("{what} is not valid JSON: {e}"),
        ),
    })
}

async fn webhook(
    State(st): State<Arc<ServeState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no webhook source `{source}`"),
        )
    };
    let hook = st.hooks.get(&source).ok_or_else(not_found)?;
    let keys: Vec<&[u8]> = hook.secrets.iter().map(|s| s.expose().as_bytes()).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verified = match hook.scheme.verify(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        &body,
        &keys,
        now,
        hook.tolerance_secs,
    ) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(source = %source, reason = %e, bytes = body.len(), "webhook refused");
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                e.to_string(),
            ));
        }
    };
    // A signed URL-verification handshake (Slack's, when an app's request URL is set) is
    // answered with its challenge; nothing lands, so it needs no replay ticket.
    if hook.map.handshakes()
        && let Ok(event) = serde_json::from_slice::<Value>(&body)
        && let Some(challenge) = hook.map.challenge(&event)
    {
        tracing::info!(source = %source, "webhook URL verification answered; nothing landed");
        return Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "challenge": challenge })),
        )
            .into_response());
    }
    let ticket = match st
        .replays
        .claim(verified.timestamp, &body, now, hook.tolerance_secs)
    {
        Ok(ticket) => ticket,
        // Landed already: a sender that lost our answer and delivers again gets the same
        // success (it stops retrying), and nothing lands twice.
        Err(e @ replay::Replay::Landed(_)) => {
            tracing::info!(source = %source, reason = %e, bytes = body.len(), "webhook delivered again");
            return Ok((
                StatusCode::OK,
                Json(serde_json::json!({ "status": "duplicate", "message": e.to_string() })),
            )
                .into_response());
        }
        Err(e @ replay::Replay::InFlight(_)) => {
            tracing::warn!(source = %source, reason = %e, bytes = body.len(), "webhook delivered twice at once");
            return Err(ApiError(StatusCode::CONFLICT, "in_flight", e.to_string()));
        }
    };
    json_content_type(&headers)?;
    let event: Value = parse_json(&body, "the body")?;
    if !event.is_object() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "not_an_object",
            "the event must be a JSON object".into(),
        ));
    }
    let ev = match hook.map.map(&event, &headers) {
        Ok(events::Mapped::Land(ev)) => ev,
        Ok(events::Mapped::Ignored { event_type }) => {
            tracing::info!(source = %source, event_type = %event_type, "webhook of an ignored type acknowledged; nothing landed");
            metrics::counter!(crate::telemetry::metric::SERVE_WEBHOOKS_IGNORED, "source" => source.clone())
                .increment(1);
            ticket.landed();
            return Ok((
                StatusCode::OK,
                Json(serde_json::json!({ "status": "ignored", "event_type": event_type })),
            )
                .into_response());
        }
        Err(e) => {
            tracing::warn!(source = %source, code = e.1, reason = %e.2, "webhook refused");
            return Err(e);
        }
    };
    let (entity, event_id, stream) = (ev.entity_id, ev.event_id, ev.stream);
    let h = LandingHeaders::mapped_event(
        &source,
        &stream,
        &format!("POST /v1/webhooks/{source}"),
        &event_id,
        ev.version,
        ev.op.as_str(),
    );
    // An event over the landing topic's inline limit is stored by claim-check, like a page:
    // the landing value is its reference (`intake.blob`), validate reads the body back.
    let landed = LandedBody::land(&st.blobs, body, st.cfg.blob.max_inline_bytes)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "blob_store",
                format!("the event is over the inline limit and the blob store failed: {e}"),
            )
        })?;
    let h = landed.write(h, Kind::Event);
    let value = landed.value();
    let rec = ToLand {
        topic: st.names.landing(),
        key: Bytes::from(entity.clone().into_bytes()),
        value: Some(value),
        headers: h.build(),
    };
    if crate::faults::hit(crate::faults::Fault::ServeEarlyAck) {
        tracing::warn!(
            fault = crate::faults::Fault::ServeEarlyAck.name(),
            event_id = %event_id,
            "deliberate fault: answered as landed, not landed"
        );
    } else {
        lander::land(&st.queue, vec![rec], st.ack_wait).await?;
    }
    ticket.landed();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "landed", "event_id": event_id, "entity_id": entity })),
    )
        .into_response())
}

async fn submit_job(
    State(st): State<Arc<ServeState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = st.clients.check(&headers, ServeOperation::Jobs)?;
    let bad = |code: &'static str, m: String| ApiError(StatusCode::BAD_REQUEST, code, m);
    let job_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.get("job_id").cloned())
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .ok_or_else(|| {
            bad(
                "missing_job_id",
                "give a job id in the Idempotency-Key header or ?job_id= (at most 200 characters)"
                    .into(),
            )
        })?;
    // `~` starts the keys intake itself writes to `intake.jobs` (count deltas, replay markers);
    // a client id there could overwrite them once the topic compacts.
    if job_id.starts_with('~') {
        return Err(bad(
            "reserved_job_id",
            "job ids starting with `~` are reserved for intake's own records".into(),
        ));
    }
    let source = q
        .get("source")
        .ok_or_else(|| bad("missing_source", "?source= is required".into()))?;
    caller.may_act_for(ServeOperation::Jobs, source)?;
    let stream = q
        .get("stream")
        .ok_or_else(|| bad("missing_stream", "?stream= is required".into()))?;
    let (src, st_cfg) = st
        .cfg
        .stream(&format!("{source}/{stream}"))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "unknown_stream",
                format!("no stream `{source}/{stream}`"),
            )
        })?;
    let (content, blob_ref, blob_name) = match q.get("blob") {
        Some(name) => {
            if !body.is_empty() {
                return Err(bad(
                    "body_with_blob",
                    "a job by reference (?blob=) has an empty body".into(),
                ));
            }
            let (r, bytes) = st.blobs.get_named(name).await.map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "unknown_blob",
                    format!(
                        "blob `{name}` cannot be read (upload it with PUT /v1/blobs/{name}): {e}"
                    ),
                )
            })?;
            (bytes, Some(r), Some(name.clone()))
        }
        None => {
            json_content_type(&headers)?;
            (body, None, None)
        }
    };
    let parsed: Value = parse_json(&content, "the batch")?;
    let records = parsed
        .pointer(&st_cfg.records)
        .and_then(Value::as_array)
        .ok_or_else(|| {
            bad(
                "not_a_batch",
                format!("the batch has no record array at `{}`", st_cfg.records),
            )
        })?
        .len() as u64;
    let sha = blob_ref
        .as_ref()
        .map_or_else(|| crate::blob::sha256_hex(&content), |r| r.sha256.clone());
    let fp = jobs::fingerprint(&src.name, &st_cfg.name, &sha);

    let lock = st.jobs.lock(&job_id);
    let _guard = lock.lock().await;
    if let Some(existing) = st.jobs.get(&job_id) {
        return if existing.fingerprint == fp {
            Ok((StatusCode::OK, Json(existing)).into_response())
        } else {
            Err(ApiError(
                StatusCode::CONFLICT,
                "job_id_reused",
                format!("job `{job_id}` exists with other content; use a new id"),
            ))
        };
    }
    let job = jobs::Job {
        job_id: job_id.clone(),
        fingerprint: fp,
        source: src.name.clone(),
        stream: st_cfg.name.clone(),
        state: "landed".into(),
        records,
        bytes: content.len() as u64,
        blob: blob_name,
        landed_at: headers::now_rfc3339(),
        counts: jobs::Counts::landed(records),
        attempt: Some(uuid::Uuid::new_v4().to_string()),
    };
    let h = LandingHeaders::provenance(&src.name, &st_cfg.name, "POST /v1/jobs")
        .with(headers::JOB_ID, &job_id)
        .with(
            headers::JOB_ATTEMPT,
            job.attempt.as_deref().unwrap_or_default(),
        );
    let landed = match &blob_ref {
        Some(r) => LandedBody::Stored(r.clone()),
        None => LandedBody::Inline(content),
    };
    let h = landed.write(h, Kind::Batch);
    let value = landed.value();
    let key = format!("{}/{}", src.name, st_cfg.name);
    let batch = ToLand {
        topic: st.names.landing(),
        key: Bytes::from(key.into_bytes()),
        value: Some(value),
        headers: h.build(),
    };
    let registry = ToLand {
        topic: st.names.jobs(),
        key: Bytes::from(job_id.clone().into_bytes()),
        value: Some(Bytes::from(serde_json::to_vec(&job).expect("serialisable"))),
        headers: Headers::new().build(),
    };
    lander::land(&st.queue, vec![batch, registry], st.ack_wait).await?;
    st.jobs.insert(job.clone());
    tracing::info!(job_id = %job_id, client = caller.name(), source = %job.source, stream = %job.stream, records, "job landed");
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

async fn get_job(
    State(st): State<Arc<ServeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<jobs::Job>, ApiError> {
    let caller = st.clients.check(&headers, ServeOperation::Jobs)?;
    let job = st.jobs.get(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("no job `{id}`"),
        )
    })?;
    caller.may_act_for(ServeOperation::Jobs, &job.source)?;
    Ok(Json(job))
}

async fn upload(
    State(st): State<Arc<ServeState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = st.clients.check(&headers, ServeOperation::Blobs)?;
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok || name.starts_with('.') {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "blob names are 1-200 characters of [A-Za-z0-9._-], not starting with '.'".into(),
        ));
    }
    let (r, created) = st.blobs.put_named(&name, body).await.map_err(|e| match e {
        crate::blob::BlobError::NameTaken(_) => {
            tracing::warn!(client = caller.name(), blob = %name, "blob upload refused: the name exists with other content");
            ApiError(StatusCode::CONFLICT, "blob_exists", e.to_string())
        }
        e => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "blob_store",
            format!("the blob store failed: {e}"),
        ),
    })?;
    tracing::info!(client = caller.name(), blob = %name, bytes = r.size, created, "blob stored");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(r)).into_response())
}
