//! The upstream API under test: `GET /v1/{stream}` in the stream's configured style and
//! `GET /v1/styles/{style}/{stream}` in any style, behind bearer auth, the quota and faults.
//!
//! Every request passes a guard in this order: auth (401 without a known token — or, with
//! `--oidc-issuer`, without an access token the issuer signed (see `oidc`) —, not
//! counted against any quota) → quota (counted; 429 over it) → faults (delay, reset, 5xx) →
//! the handler. Every answer past auth carries `X-RateLimit-Limit`, `X-RateLimit-Remaining`
//! and `X-RateLimit-Reset`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::debug;

use super::args::{Compression, Style};
use super::clock;
use super::conn::ConnHandle;
use super::data::Stream;
use super::error::ApiError;
use super::faults::cut_short;
use super::pagination::{ListRequest, RESULT_CAP_CODE};
use super::quota::Decision;
use super::state::SimState;

/// The `/v1` routes with their guard, compressed with `compress` when the request accepts it.
pub fn router(state: Arc<SimState>, compress: Option<Compression>) -> Router<Arc<SimState>> {
    let routes = Router::new()
        .route("/v1/styles/{style}/{stream}", get(list_in_style))
        .route("/v1/{stream}", get(list))
        .merge(super::providers::api())
        .merge(super::export::api())
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard));
    let Some(c) = compress else { return routes };
    routes
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(c == Compression::Gzip)
                .deflate(c == Compression::Deflate)
                .compress_when(tower_http::compression::predicate::SizeAbove::new(0)),
        )
        .layer(middleware::from_fn_with_state(state, count_compressed))
}

/// Counts the answers that leave compressed.
async fn count_compressed(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let response = next.run(req).await;
    if response.headers().contains_key(header::CONTENT_ENCODING) {
        state.counters.compressed.fetch_add(1, Ordering::SeqCst);
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(state: &SimState, message: &str) -> Response {
    state.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: message.to_owned(),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn rate_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert("x-ratelimit-limit", decision.limit.into());
    headers.insert("x-ratelimit-remaining", decision.remaining.into());
    headers.insert("x-ratelimit-reset", decision.reset_secs.into());
}

/// An injected 5xx: JSON from the API, or an HTML page as a gateway would send.
fn injected_error(status: StatusCode) -> Response {
    match status {
        StatusCode::BAD_GATEWAY => (
            status,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        _ => {
            let mut response = ApiError {
                status,
                code: "upstream_error",
                message: format!("injected fault: {status}"),
            }
            .into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            response
        }
    }
}

/// Auth, quota and faults, in that order (also in front of the GitHub routes, `super::github`).
pub(super) async fn guard(
    State(state): State<Arc<SimState>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    request: Request,
    next: Next,
) -> Response {
    match admit(&state, &conn, request.headers()).await {
        Ok(decision) => {
            let mut response = next.run(request).await;
            rate_headers(response.headers_mut(), &decision);
            response
        }
        Err(response) => response,
    }
}

/// The guard's checks on one request: auth, quota, then faults (a delay is slept here). `Ok`
/// with the quota decision whose headers the handler's answer gets ([`with_rate_headers`]);
/// `Err` with the answer to send instead (401, 429, an injected 5xx, or a reset connection).
/// `super::fixtures` guards its answers with it too.
pub(super) async fn admit(
    state: &SimState,
    conn: &ConnHandle,
    headers: &HeaderMap,
) -> Result<Decision, Response> {
    let Some(token) = bearer(headers) else {
        return Err(unauthorized(
            state,
            "missing bearer token: send Authorization: Bearer <token>",
        ));
    };
    let token = match (&state.sessions, &state.oidc) {
        (Some(sessions), _) => {
            if !sessions.accepts(token) {
                return Err(unauthorized(
                    state,
                    "no live session with this token; log in at /v1/login",
                ));
            }
            sessions.quota_token.as_str()
        }
        (None, None) => token,
        (None, Some(oidc)) => match oidc.verify(token).await {
            Ok(_) => {
                state.counters.oidc_accepted.fetch_add(1, Ordering::SeqCst);
                oidc.quota_token.as_str()
            }
            Err(why) => return Err(unauthorized(state, &why)),
        },
    };
    let decision = state.quotas().check(token, clock::now());
    let Some(decision) = decision else {
        return Err(unauthorized(state, "unknown API token"));
    };
    if !decision.accepted {
        let mut response = ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!(
                "quota of {} requests per {} ms exceeded; retry after {} s",
                decision.limit, state.quota_window_ms, decision.retry_after_secs
            ),
        }
        .into_response();
        rate_headers(response.headers_mut(), &decision);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, decision.retry_after_secs.into());
        return Err(response);
    }
    let plan = state.faults().plan();
    if let Some(delay) = plan.delay {
        debug!(remote = %conn.remote, ?delay, "fault: slow answer");
        tokio::time::sleep(delay).await;
    }
    if plan.reset {
        debug!(remote = %conn.remote, "fault: connection reset");
        conn.reset();
        // Never written: the connection fails before hyper can send it.
        return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if let Some(status) = plan.error {
        debug!(remote = %conn.remote, status = status.as_u16(), "fault: 5xx");
        let mut response = injected_error(status);
        rate_headers(response.headers_mut(), &decision);
        return Err(response);
    }
    Ok(decision)
}

/// Adds the quota headers of an admitted request ([`admit`]) to its answer.
pub(super) fn with_rate_headers(mut response: Response, decision: &Decision) -> Response {
    rate_headers(response.headers_mut(), decision);
    response
}

async fn list(
    State(state): State<Arc<SimState>>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let stream: Stream = stream.parse().map_err(ApiError::not_found)?;
    let style = state.styles[stream.index()];
    serve(&state, stream, style, query, &headers, &uri)
}

async fn list_in_style(
    State(state): State<Arc<SimState>>,
    Path((style, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let style: Style = style.parse().map_err(ApiError::not_found)?;
    let stream: Stream = stream.parse().map_err(ApiError::not_found)?;
    serve(&state, stream, style, query, &headers, &uri)
}

fn serve(
    state: &SimState,
    stream: Stream,
    style: Style,
    query: Option<String>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let request = ListRequest::parse(style, query.as_deref().unwrap_or(""), state.sizes)?;
    let fetched = request.fetch(&state.store(), stream, state.result_cap);
    let fetched = fetched.inspect_err(|e| {
        if e.code == RESULT_CAP_CODE {
            state
                .counters
                .result_cap_refusals
                .fetch_add(1, Ordering::SeqCst);
        }
    })?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.local_addr.to_string(), str::to_owned);
    let answer = fetched.answer(&format!("http://{host}{}", uri.path()));
    state.counters.pages.fetch_add(1, Ordering::SeqCst);
    let body = if state.faults().malformed() {
        debug!(stream = stream.as_str(), "fault: malformed page");
        cut_short(&answer.body)
    } else {
        answer.body
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, answer.format.content_type())],
        body,
    )
        .into_response();
    if let Some(link) = answer.link {
        let value = HeaderValue::from_str(&link)
            .map_err(|_| ApiError::bad_param("the Host header cannot form a Link URL"))?;
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}
