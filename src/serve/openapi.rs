//! The OpenAPI description served at `/openapi.json`.

use serde_json::{Value, json};

/// The error answers every endpoint may give, plus its own successes.
fn responses(ok: &[(&str, &str)]) -> Value {
    let mut r = json!({
        "400": {"description": "bad input (malformed or non-UTF-8 JSON, not an object, missing field); the body names the reason"},
        "401": {"description": "bad, stale or missing signature"},
        "404": {"description": "unknown source, stream or job"},
        "409": {"description": "job id reused with other content"},
        "413": {"description": "body over the size limit"},
        "415": {"description": "a Content-Type other than JSON (an unlabelled body is read as JSON)"},
        "503": {"description": "Kafka unavailable: nothing was acknowledged; retry"}
    });
    for (code, desc) in ok {
        r[*code] = json!({ "description": desc });
    }
    r
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "intake serve", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Webhooks and idempotent batch jobs landed in Kafka exactly once. A 2xx means committed."},
        "paths": {
            "/v1/webhooks/{source}": {"post": {
                "summary": "Land a signed webhook event",
                "parameters": [{"name": "source", "in": "path", "required": true, "schema": {"type": "string"}},
                               {"name": "X-Intake-Signature", "in": "header", "required": true, "schema": {"type": "string"},
                                "description": "t=<unix>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": responses(&[("202", "landed (committed)")])}},
            "/v1/jobs": {"post": {
                "summary": "Submit a batch under a job id (idempotent)",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "description": "the client's job id: 1 to 200 characters, not starting with `~` (reserved)", "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
                               {"name": "job_id", "in": "query", "schema": {"type": "string"}},
                               {"name": "source", "in": "query", "required": true, "schema": {"type": "string"}},
                               {"name": "stream", "in": "query", "required": true, "schema": {"type": "string"}},
                               {"name": "blob", "in": "query", "schema": {"type": "string"}, "description": "an uploaded blob instead of an inline body"}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": responses(&[("201", "job landed"), ("200", "the same job existed")])}},
            "/v1/jobs/{id}": {"get": {"summary": "A job's state",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the job: state (landed, validating, validated) and counts {landed, valid, dead_lettered, replayed, pending}"}, "404": {"description": "unknown job"}}}},
            "/v1/blobs/{name}": {"put": {"summary": "Upload a large batch for a job by reference",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
                "responses": {"201": {"description": "stored: uri, sha256, size"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness (Kafka transactions work)", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}}
        }
    })
}
