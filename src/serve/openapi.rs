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

/// An operation that needs an API key (`[[serve.clients]]`): the bearer scheme, 401 and 403.
fn protected(mut op: Value) -> Value {
    op["security"] = json!([{ "bearer": [] }]);
    op["responses"]["401"] = json!({"description": "no API key, not `Bearer <key>`, or an unknown key (with `WWW-Authenticate: Bearer`)"});
    op["responses"]["403"] =
        json!({"description": "the client may not use this operation or act for this source"});
    op
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
                               {"name": "X-Intake-Signature", "in": "header", "required": false, "schema": {"type": "string"},
                                "description": "with the default scheme: t=<unix>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">; a source with a preset takes its provider's header instead (Stripe-Signature, X-Hub-Signature-256, X-Shopify-Hmac-Sha256, X-Slack-Signature)"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": responses(&[("202", "landed (committed)"), ("200", "a duplicate of a landed delivery, or an ignored event type: nothing landed"), ("422", "an event type the source does not map: nothing landed")])}},
            "/v1/jobs": {"post": protected(json!({
                "summary": "Submit a batch under a job id (idempotent)",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "description": "the client's job id: 1 to 200 characters, not starting with `~` (reserved)", "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
                               {"name": "job_id", "in": "query", "schema": {"type": "string"}},
                               {"name": "source", "in": "query", "required": true, "schema": {"type": "string"}},
                               {"name": "stream", "in": "query", "required": true, "schema": {"type": "string"}},
                               {"name": "blob", "in": "query", "schema": {"type": "string"}, "description": "an uploaded blob instead of an inline body"}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": responses(&[("201", "job landed"), ("200", "the same job existed")])}))},
            "/v1/jobs/{id}": {"get": protected(json!({"summary": "A job's state",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the job: state (landed, validating, validated) and counts {landed, valid, dead_lettered, replayed, pending}"}, "404": {"description": "unknown job"}}}))},
            "/v1/blobs/{name}": {"put": protected(json!({"summary": "Upload a large batch for a job by reference (a name is written once)",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
                "responses": {"201": {"description": "stored: uri, sha256, size"},
                              "200": {"description": "the same content was already stored under this name"},
                              "409": {"description": "the name exists with other content"}}}))},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness (Kafka transactions work)", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (only on serve.admin_listen when that is set)", "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}}
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
            "description": "an API key of a [[serve.clients]] entry: `Authorization: Bearer <key>`"}}}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn jobs_and_blobs_show_the_bearer_scheme_and_webhooks_do_not() {
        let d = super::document();
        assert_eq!(
            d["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, method) in [
            ("/v1/jobs", "post"),
            ("/v1/jobs/{id}", "get"),
            ("/v1/blobs/{name}", "put"),
        ] {
            let op = &d["paths"][path][method];
            assert_eq!(
                op["security"],
                serde_json::json!([{"bearer": []}]),
                "{path}"
            );
            assert!(op["responses"]["401"].is_object(), "{path}");
            assert!(op["responses"]["403"].is_object(), "{path}");
        }
        assert!(d["paths"]["/v1/blobs/{name}"]["put"]["responses"]["409"].is_object());
        assert!(d["paths"]["/v1/webhooks/{source}"]["post"]["security"].is_null());
    }
}
