//! HTTP requests to a source: authentication, pacing, retries with backoff and full jitter,
//! `Retry-After`, and quota learning from response headers.
//!
//! Every attempt, retries included, goes through the token's pacer and holds its permit until
//! the response's headers arrived (see `quota::pacer` for the bound this gives).
//!
//! Retried: 5xx, time-outs, connection errors (bounded by `max_retries`). A 429 pauses every
//! stream of the token until `Retry-After` and is retried without counting as a failure (the
//! pacer, not a retry loop, is what keeps us under quota). Any other 4xx is returned as
//! [`HttpError::Client`]: the stream pauses with a clear error instead of busy-looping.
//!
//! Redirects are followed by hand, at most [`MAX_REDIRECTS`] per request, and credentials are
//! sent only to the origin of the URL asked for (see `SourceClient::send`).
//!
//! With session auth (`super::session`) a 401 drops the session token and the request logs in
//! again and is repeated once; a second 401 is returned as [`HttpError::Client`].
//!
//! With OAuth 2.0 (`super::oauth`) a 401 drops the access token it was sent with and the
//! request is repeated once with a fresh one; a second 401 is returned as
//! [`HttpError::Client`], and a token that cannot be had as [`HttpError::Auth`] (the stream
//! pauses) or [`HttpError::Fenced`] (a newer owner took the token: the stream stops).
//!
//! A source in the benchmark-only `naive` quota mode neither learns from headers nor pauses on
//! a 429: it retries at once, as a per-worker limiter does (the rate-limit death spiral).

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, HeaderMap, LOCATION, RETRY_AFTER};
use url::Url;

use super::request::Shape;
use crate::config::{
    Auth, ConfigError, QuotaHeaders, SecretString, SourceConfig, StatusAction, StatusRule,
};
use crate::quota::{Observed, Pacer};

/// A successful response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes exactly as received, decoded if they came compressed (see
    /// [`super::encoding`]; `headers` then lack `Content-Encoding` and `Content-Length`).
    pub body: Bytes,
    /// The request URL with secrets redacted (for headers and logs).
    pub url: String,
    /// Attempts it took.
    pub attempts: u32,
    /// An `on_status` rule said `skip`: land nothing, go on as after an empty page.
    pub skipped: bool,
}

/// What a response status means (see [`crate::config::StatusRule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusDecision {
    /// A page: land it.
    Land,
    /// Retry with backoff.
    Retry,
    /// A rate limit: pause the token, then retry.
    Wait,
    /// Land nothing, go on.
    Skip,
    /// Pause the stream with the reason.
    Fail,
}

impl From<StatusAction> for StatusDecision {
    fn from(a: StatusAction) -> Self {
        match a {
            StatusAction::Retry => Self::Retry,
            StatusAction::Wait => Self::Wait,
            StatusAction::Skip => Self::Skip,
            StatusAction::Fail => Self::Fail,
        }
    }
}

/// What to do with a response: the first rule whose status range holds `status` and whose
/// body text (if any) is in `body`, else the defaults — 2xx lands; 429, and a 403 that
/// carries rate-limit headers (`Retry-After`, or a remaining quota of 0), wait; 5xx retries;
/// anything else fails. `None` when a rule's body text decides and the body is not read yet.
pub fn decide(
    rules: &[StatusRule],
    status: u16,
    headers: &HeaderMap,
    names: Option<&QuotaHeaders>,
    body: Option<&[u8]>,
) -> Option<StatusDecision> {
    for r in rules {
        if r.matches(status, body.unwrap_or_default()) {
            return Some(r.action.into());
        }
        if r.body.is_some() && body.is_none() && r.status.0 <= status && status <= r.status.1 {
            return None;
        }
    }
    Some(match status {
        200..=299 => StatusDecision::Land,
        429 => StatusDecision::Wait,
        403 if headers.contains_key(RETRY_AFTER)
            || announced_quota(headers, names).is_some_and(|q| q.remaining == 0) =>
        {
            StatusDecision::Wait
        }
        500..=599 => StatusDecision::Retry,
        _ => StatusDecision::Fail,
    })
}

/// A request that failed for good (after retries, or not retriable).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A 4xx other than 429: the request itself is wrong (auth, path, parameters).
    #[error("{url} answered {status}: {body}")]
    Client {
        /// URL (redacted).
        url: String,
        /// Status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// No OAuth 2.0 access token could be had (refused grant, provider away, not the owner).
    #[error("{url}: {source}")]
    Auth {
        /// URL (redacted).
        url: String,
        /// Why.
        source: super::oauth::AuthError,
    },
    /// 5xx, time-outs or connection errors persisted through every retry.
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// URL (redacted).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// Redirects one request follows; a longer chain fails the attempt.
pub const MAX_REDIRECTS: usize = 5;

/// HTTP authentication with its secrets resolved: a source's (`sources[].auth`) or the
/// registry's (`registry.auth`); the one place that turns [`Auth`] into request headers.
/// OAuth 2.0 is not among them: its token changes, see [`SourceAuth`].
pub enum ResolvedAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// The key in a header of the user's choice.
    ApiKey(reqwest::header::HeaderName, SecretString),
    /// HTTP basic auth.
    Basic(String, SecretString),
    /// The key in a query parameter, added as the request is sent (never in a logged URL).
    Query(String, SecretString),
}

impl ResolvedAuth {
    /// Resolves the secrets of `auth`, configured at `at` (`sources[0].auth`, `registry.auth`).
    ///
    /// # Errors
    /// A secret that cannot be resolved, or a header name that is not one, naming the field.
    pub fn resolve(auth: &Auth, at: &str) -> Result<Self, ConfigError> {
        let secret = |field: &str, r: &crate::config::SecretRef| {
            r.resolve().map_err(|source| ConfigError::Secret {
                field: format!("{at}.{field}"),
                source,
            })
        };
        Ok(match auth {
            Auth::Bearer { token } => Self::Bearer(secret("token", token)?),
            Auth::ApiKey { header, key } => Self::ApiKey(
                header.parse().map_err(|_| {
                    crate::config::invalid(format!("{at}.header"), "not a valid header name")
                })?,
                secret("key", key)?,
            ),
            Auth::Basic { username, password } => {
                Self::Basic(username.clone(), secret("password", password)?)
            }
            Auth::ApiKeyQuery { param, key } => Self::Query(param.clone(), secret("key", key)?),
            Auth::Oauth2(_) | Auth::Session(_) => {
                return Err(crate::config::invalid(
                    format!("{at}.kind"),
                    "oauth2 and session are for sources (sources[].auth)",
                ));
            }
        })
    }

    /// The request with the credentials.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(t) => req.header(AUTHORIZATION, format!("Bearer {}", t.expose())),
            Self::ApiKey(h, k) => req.header(h.clone(), k.expose()),
            Self::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            Self::Query(k, v) => req.query(&[(k.as_str(), v.expose())]),
        }
    }
}

/// How a source's requests authenticate.
pub enum SourceAuth {
    /// Fixed credentials.
    Fixed(ResolvedAuth),
    /// An OAuth 2.0 access token, shared by every source of the token id.
    OAuth2(std::sync::Arc<super::oauth::OAuth2>),
    /// A session token from a login request (`super::session`).
    Session(Box<super::session::Session>),
}

/// The HTTP client of one source.
pub struct SourceClient {
    http: reqwest::Client,
    auth: Option<SourceAuth>,
    max_retries: u32,
    /// `quota.mode = "naive"`: ignore quota headers, retry a 429 at once.
    naive: bool,
    /// Quota header names beyond the defaults.
    quota_headers: Option<QuotaHeaders>,
    /// Base of the exponential backoff.
    pub backoff_base: Duration,
    /// Cap of the exponential backoff.
    pub backoff_cap: Duration,
}

impl std::fmt::Debug for SourceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceClient")
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// Query parameters whose values are secrets and never leave the process (compared without
/// regard to case): redacted in `intake.request` and logs, dropped from fixtures
/// (`crate::fixtures`).
pub const SECRET_PARAMS: [&str; 8] = [
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "signature",
];

/// The URL with secret-looking query values replaced by `[redacted]` and userinfo removed.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (
                    k.into_owned(),
                    if secret {
                        "[redacted]".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl SourceClient {
    /// Builds the client of a source, resolving its secrets; an `oauth2` source uses `oauth`
    /// (its token id's, shared), or a token of its own when None.
    ///
    /// # Errors
    /// When a secret cannot be resolved or the client cannot be built.
    pub fn new(src: &SourceConfig, at: &str) -> Result<Self, ConfigError> {
        Self::with_oauth(src, at, None)
    }

    /// [`SourceClient::new`] with the token id's shared OAuth 2.0 token.
    ///
    /// # Errors
    /// When a secret cannot be resolved or the client cannot be built.
    pub fn with_oauth(
        src: &SourceConfig,
        at: &str,
        oauth: Option<std::sync::Arc<super::oauth::OAuth2>>,
    ) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(src.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("intake/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            // Redirects are followed by `send`, which decides where credentials may go.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::config::invalid(format!("{at}.base_url"), e.to_string()))?;
        let auth = match (&src.auth, oauth) {
            (None, _) => None,
            (Some(Auth::Oauth2(o)), shared) => Some(SourceAuth::OAuth2(match shared {
                Some(s) => s,
                None => std::sync::Arc::new(super::oauth::OAuth2::new(
                    o,
                    src.token_id(),
                    &format!("{at}.auth"),
                )?),
            })),
            (Some(Auth::Session(c)), _) => Some(SourceAuth::Session(Box::new(
                super::session::Session::new(c, src, &format!("{at}.auth"), http.clone())?,
            ))),
            (Some(a), _) => Some(SourceAuth::Fixed(ResolvedAuth::resolve(
                a,
                &format!("{at}.auth"),
            )?)),
        };
        Ok(Self {
            http,
            auth,
            max_retries: src.max_retries,
            naive: src
                .quota
                .as_ref()
                .is_some_and(crate::config::QuotaConfig::naive),
            quota_headers: src.quota_headers.clone(),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
        })
    }

    /// GETs a URL through the token's pacer, retrying as described in the module docs.
    ///
    /// # Errors
    /// [`HttpError`] when the request cannot succeed.
    pub async fn get(&self, url: &Url, pacer: &Pacer) -> Result<Response, HttpError> {
        self.request(url, &Shape::default(), pacer).await
    }

    /// Sends a shaped request (method, headers, body) through the token's pacer, retrying as
    /// described in the module docs.
    ///
    /// # Errors
    /// [`HttpError`] when the request cannot succeed.
    pub async fn request(
        &self,
        url: &Url,
        shape: &Shape,
        pacer: &Pacer,
    ) -> Result<Response, HttpError> {
        let shown = redact(url);
        let names = self.quota_headers.as_ref();
        let mut failures = 0u32;
        let mut attempts = 0u32;
        let mut fresh_token_after_401 = false;
        loop {
            let bearer = match &self.auth {
                Some(SourceAuth::OAuth2(o)) => match o.bearer().await {
                    Ok(t) => Some(t),
                    Err(source) => {
                        return Err(HttpError::Auth { url: shown, source });
                    }
                },
                Some(SourceAuth::Session(s)) => match s.token().await {
                    Ok(t) => Some(t),
                    Err(source) => {
                        return Err(HttpError::Auth { url: shown, source });
                    }
                },
                _ => None,
            };
            let permit = pacer.acquire().await;
            attempts += 1;
            let sent = self.send(url, shape, bearer.as_ref()).await;
            // The headers (a pause, a lower limit) are known to the pacer before the permit
            // ends, so the request the end lets through already follows them.
            let mut paused = false;
            if let Ok(resp) = &sent
                && !self.naive
            {
                learn_quota(resp.headers(), names, pacer);
                let early = decide(
                    &shape.on_status,
                    resp.status().as_u16(),
                    resp.headers(),
                    names,
                    None,
                );
                if early == Some(StatusDecision::Wait) {
                    pacer
                        .pause_until(tokio::time::Instant::now() + wait_for(resp.headers(), names));
                    paused = true;
                }
            }
            drop(permit);
            let failed: (String, Option<Duration>) = match sent {
                Err(why) => (why, None),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let mut headers = resp.headers().clone();
                    if status == 401
                        && let (Some(SourceAuth::Session(session)), Some(sent)) =
                            (&self.auth, &bearer)
                    {
                        session.rejected(sent).await;
                        if !fresh_token_after_401 {
                            // The session expired or was revoked: log in again, once.
                            tracing::warn!(url = %shown, "401 Unauthorized: logging in again and retrying once");
                            fresh_token_after_401 = true;
                            continue;
                        }
                        let snippet = snippet(resp).await;
                        return Err(HttpError::Client {
                            url: shown,
                            status,
                            body: format!("{snippet} (again after a fresh session login)"),
                        });
                    }
                    if status == 401
                        && let (Some(SourceAuth::OAuth2(o)), Some(sent)) = (&self.auth, &bearer)
                    {
                        if !fresh_token_after_401 {
                            // The token may have been revoked or expired early: once more
                            // with a fresh one.
                            tracing::warn!(url = %shown, "401 Unauthorized: retrying once with a fresh oauth2 access token");
                            o.rejected(sent).await;
                            fresh_token_after_401 = true;
                            continue;
                        }
                        let snippet = snippet(resp).await;
                        let e = HttpError::Client {
                            url: shown,
                            status,
                            body: format!("{snippet} (again with a fresh oauth2 access token)"),
                        };
                        o.paused(&e.to_string()).await;
                        return Err(e);
                    }
                    let body = match resp.bytes().await {
                        Err(e) => Err(format!("reading body: {e}")),
                        Ok(raw) => match super::encoding::decode(&mut headers, raw).await {
                            Ok(body) => Ok(body),
                            Err(e) if e.retryable() => Err(e.to_string()),
                            Err(e) => {
                                return Err(HttpError::Client {
                                    url: shown,
                                    status,
                                    body: e.to_string(),
                                });
                            }
                        },
                    };
                    match body {
                        Err(why) => (why, None),
                        Ok(body) => {
                            let decision =
                                decide(&shape.on_status, status, &headers, names, Some(&body))
                                    .unwrap_or(StatusDecision::Fail);
                            let snippet = || {
                                String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                            };
                            match decision {
                                StatusDecision::Land | StatusDecision::Skip => {
                                    return Ok(Response {
                                        status,
                                        headers,
                                        body,
                                        url: shown,
                                        attempts,
                                        skipped: decision == StatusDecision::Skip,
                                    });
                                }
                                StatusDecision::Fail => {
                                    return Err(HttpError::Client {
                                        url: shown,
                                        status,
                                        body: snippet(),
                                    });
                                }
                                StatusDecision::Wait => {
                                    metrics::counter!(crate::telemetry::metric::FETCH_HTTP_429)
                                        .increment(1);
                                    // Counted apart from failures: a rate limit is the upstream
                                    // asking us to wait, but one that never ends still ends the
                                    // page.
                                    if attempts > 50 + self.max_retries {
                                        return Err(HttpError::Exhausted {
                                            url: shown,
                                            attempts,
                                            last: format!("{status} rate limited: {}", snippet()),
                                        });
                                    }
                                    if self.naive {
                                        continue;
                                    }
                                    let wait = wait_for(&headers, names);
                                    if !paused {
                                        pacer.pause_until(tokio::time::Instant::now() + wait);
                                    }
                                    tracing::warn!(url = %shown, status, wait_ms = wait.as_millis() as u64, "rate limited: pausing every stream of this token");
                                    continue;
                                }
                                StatusDecision::Retry => {
                                    (format!("HTTP {status}"), retry_after(&headers))
                                }
                            }
                        }
                    }
                }
            };
            let (why, after) = failed;
            failures += 1;
            metrics::counter!(crate::telemetry::metric::FETCH_HTTP_RETRIES).increment(1);
            if failures > self.max_retries {
                return Err(HttpError::Exhausted {
                    url: shown,
                    attempts,
                    last: why,
                });
            }
            let wait = after.unwrap_or_else(|| self.backoff(failures));
            tracing::info!(url = %shown, attempt = attempts, error = %why, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One GET, following redirects by hand (the client follows none): the credentials go
    /// only to the origin (scheme, host and port) of the URL asked for. A hop to another
    /// origin — a CDN, a storage bucket, or wherever a compromised or misconfigured upstream
    /// points — is sent without them, whatever header they are in (reqwest's own policy drops
    /// only `Authorization` and cookies). At most [`MAX_REDIRECTS`] hops; each is logged.
    ///
    /// A POST keeps its method and body through a 307 or 308 and becomes a GET without a body
    /// through any other redirect (as browsers and RFC 9110 do). The shape's headers go only
    /// to the origin asked for, as credentials do.
    async fn send(
        &self,
        url: &Url,
        shape: &Shape,
        bearer: Option<&SecretString>,
    ) -> Result<reqwest::Response, String> {
        let origin = url.origin();
        let mut at = url.clone();
        let mut post = shape.post;
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = at.origin() == origin;
            let mut req = if shape.delete {
                self.http.delete(at.clone())
            } else if post {
                self.http.post(at.clone())
            } else {
                self.http.get(at.clone())
            }
            .header(ACCEPT_ENCODING, super::encoding::ACCEPT_ENCODING);
            if same_origin {
                for (k, v) in &shape.headers {
                    req = req.header(k, v);
                }
                req = self.authorize(req, bearer);
            }
            if let (true, Some((content_type, body))) = (post, &shape.body) {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(body.clone());
            }
            let resp = req.send().await.map_err(|e| describe(&e))?;
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            let (true, Some(location)) = (resp.status().is_redirection(), location) else {
                return Ok(resp);
            };
            let next = at
                .join(&location)
                .map_err(|e| format!("HTTP {} to an invalid Location: {e}", resp.status()))?;
            let credentials = next.origin() == origin;
            if !matches!(resp.status().as_u16(), 307 | 308) {
                post = false;
            }
            tracing::info!(
                from = %redact(&at),
                to = %redact(&next),
                status = resp.status().as_u16(),
                credentials,
                "following a redirect{}",
                if credentials { "" } else { " to another origin, without credentials" }
            );
            at = next;
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        bearer: Option<&SecretString>,
    ) -> reqwest::RequestBuilder {
        match (&self.auth, bearer) {
            (Some(SourceAuth::Fixed(a)), _) => a.apply(req),
            (Some(SourceAuth::OAuth2(_)), Some(t)) => {
                req.header(AUTHORIZATION, format!("Bearer {}", t.expose()))
            }
            (Some(SourceAuth::Session(s)), Some(t)) => s.apply(req, t),
            _ => req,
        }
    }

    /// The source's shared OAuth 2.0 token, if it uses one.
    pub fn oauth(&self) -> Option<&std::sync::Arc<super::oauth::OAuth2>> {
        match &self.auth {
            Some(SourceAuth::OAuth2(o)) => Some(o),
            _ => None,
        }
    }

    /// Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^n)].
    fn backoff(&self, n: u32) -> Duration {
        let exp = self.backoff_base.saturating_mul(1u32 << n.min(16));
        let ceiling = exp.min(self.backoff_cap);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// The start of an error answer's body (decoded if it came compressed), for the error.
async fn snippet(resp: reqwest::Response) -> String {
    let mut headers = resp.headers().clone();
    let raw = resp.bytes().await.unwrap_or_default();
    let body = super::encoding::decode(&mut headers, raw.clone())
        .await
        .unwrap_or(raw);
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// A reqwest error as one line: what kind of failure and its innermost cause (never the URL).
pub fn describe(e: &reqwest::Error) -> String {
    // reqwest errors may carry the URL; ours has no secrets in it (auth is in headers, and
    // query secrets are redacted in what we log), but strip it anyway to be safe.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body interrupted"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// `Retry-After` as seconds or as an HTTP date (the wait until then; zero for a date in the
/// past), at most an hour; 1 s when it is neither.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    retry_after_at(h, time::OffsetDateTime::now_utc())
}

fn retry_after_at(h: &HeaderMap, now: time::OffsetDateTime) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs = match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => s,
        _ => match time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822) {
            Ok(at) => (at - now).as_seconds_f64().max(0.0),
            Err(_) => 1.0,
        },
    };
    Some(Duration::from_secs_f64(secs.min(3600.0)))
}

/// How long a rate-limited token waits: `Retry-After`, else the announced reset when no
/// requests remain, else 1 s.
fn wait_for(h: &HeaderMap, names: Option<&QuotaHeaders>) -> Duration {
    retry_after(h)
        .or_else(|| {
            announced_quota(h, names)
                .filter(|q| q.remaining == 0)
                .map(|q| q.reset_in)
        })
        .unwrap_or(Duration::from_secs(1))
}

/// The quota a response announces: the configured `quota_headers`, else
/// `X-RateLimit-Limit` / `-Remaining` / `-Reset` (seconds until reset, or an epoch time), else
/// the IETF `RateLimit: limit=..., remaining=..., reset=...` form.
pub fn announced_quota(h: &HeaderMap, names: Option<&QuotaHeaders>) -> Option<Observed> {
    let num = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let configured = names.and_then(|n| {
        Some((
            n.limit.as_deref().and_then(num),
            num(&n.remaining)?,
            num(&n.reset)?,
        ))
    });
    let (limit, remaining, reset) = match (
        configured,
        num("x-ratelimit-remaining"),
        num("x-ratelimit-reset"),
    ) {
        (Some(c), _, _) => c,
        (None, Some(r), Some(s)) => (num("x-ratelimit-limit"), r, s),
        _ => {
            let v = h.get("ratelimit").and_then(|v| v.to_str().ok())?;
            let field = |k: &str| {
                v.split([',', ';'])
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(a, _)| a.trim() == k)
                    .and_then(|(_, b)| b.trim().parse::<f64>().ok())
            };
            (field("limit"), field("remaining")?, field("reset")?)
        }
    };
    // Epoch-style resets (seconds since 1970) are converted to a relative wait.
    let reset = if reset > 1.0e9 {
        (reset - time::OffsetDateTime::now_utc().unix_timestamp() as f64).max(0.0)
    } else {
        reset
    };
    (remaining >= 0.0 && reset > 0.0).then(|| Observed {
        limit: limit.filter(|l| *l >= 0.0).map(|l| l as u64),
        remaining: remaining as u64,
        reset_in: Duration::from_secs_f64(reset.min(3600.0)),
    })
}

/// Feeds what a response announces to the token's pacer.
fn learn_quota(h: &HeaderMap, names: Option<&QuotaHeaders>, pacer: &Pacer) {
    if let Some(o) = announced_quota(h, names) {
        pacer.observe(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_query_secrets_and_userinfo() {
        let u =
            Url::parse("https://user:pw@api.x.com/v1/a?api_key=SECRET&page=2&Token=T2").unwrap();
        let r = redact(&u);
        assert_eq!(
            r,
            "https://api.x.com/v1/a?api_key=%5Bredacted%5D&page=2&Token=%5Bredacted%5D"
        );
        assert!(!r.contains("SECRET") && !r.contains("pw") && !r.contains("T2"));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        // An HTTP date: the wait until then (none for a date in the past).
        let now = time::OffsetDateTime::parse(
            "2015-10-21T07:26:30Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(90)));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
    }

    fn try_rules(toml_text: &str) -> Result<Vec<StatusRule>, toml::de::Error> {
        #[derive(serde::Deserialize)]
        struct R {
            on_status: Vec<StatusRule>,
        }
        toml::from_str::<R>(toml_text).map(|r| r.on_status)
    }

    fn rules(toml_text: &str) -> Vec<StatusRule> {
        try_rules(toml_text).unwrap()
    }

    #[test]
    fn status_decisions_rules_first_then_defaults() {
        let none = HeaderMap::new();
        let d = |r: &[StatusRule], status, h: &HeaderMap, body: Option<&[u8]>| {
            decide(r, status, h, None, body)
        };
        // Defaults.
        assert_eq!(d(&[], 200, &none, None), Some(StatusDecision::Land));
        assert_eq!(d(&[], 429, &none, None), Some(StatusDecision::Wait));
        assert_eq!(d(&[], 503, &none, None), Some(StatusDecision::Retry));
        assert_eq!(d(&[], 404, &none, None), Some(StatusDecision::Fail));
        assert_eq!(d(&[], 403, &none, None), Some(StatusDecision::Fail));
        // GitHub: a 403 with Retry-After (secondary) or with no requests left (primary).
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "60".parse().unwrap());
        assert_eq!(d(&[], 403, &h, None), Some(StatusDecision::Wait));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "30".parse().unwrap());
        assert_eq!(d(&[], 403, &h, None), Some(StatusDecision::Wait));
        assert_eq!(wait_for(&h, None), Duration::from_secs(30));
        // Rules: the first match wins; a body condition waits for the body.
        let r = rules(
            r#"on_status = [
                { status = 403, body = "secondary rate limit", action = "wait" },
                { status = "404", action = "skip" },
                { status = "400-499", action = "retry" },
                { status = 200, body = '"error"', action = "fail" },
            ]"#,
        );
        assert_eq!(d(&r, 403, &none, None), None);
        assert_eq!(
            d(
                &r,
                403,
                &none,
                Some(b"You have exceeded a secondary rate limit")
            ),
            Some(StatusDecision::Wait)
        );
        assert_eq!(
            d(&r, 403, &none, Some(b"forbidden")),
            Some(StatusDecision::Retry)
        );
        assert_eq!(d(&r, 404, &none, None), Some(StatusDecision::Skip));
        assert_eq!(d(&r, 418, &none, None), Some(StatusDecision::Retry));
        assert_eq!(
            d(&r, 200, &none, Some(br#"{"error": 1}"#)),
            Some(StatusDecision::Fail)
        );
        assert_eq!(d(&r, 200, &none, Some(b"[]")), Some(StatusDecision::Land));
        assert_eq!(d(&r, 500, &none, None), Some(StatusDecision::Retry));
        // Ranges are checked.
        for bad in ["status = 99", "status = \"500-400\"", "status = \"4xx\""] {
            let text = format!("on_status = [{{ {bad}, action = \"fail\" }}]");
            let err = try_rules(&text).unwrap_err().to_string();
            assert!(err.contains("is not a status"), "{bad}: {err}");
        }
    }

    #[test]
    fn configured_quota_header_names() {
        let mut h = HeaderMap::new();
        h.insert("x-shop-calls-left", "3".parse().unwrap());
        h.insert("x-shop-reset-in", "12".parse().unwrap());
        let names = QuotaHeaders {
            remaining: "X-Shop-Calls-Left".into(),
            reset: "X-Shop-Reset-In".into(),
            limit: None,
        };
        assert_eq!(announced_quota(&h, None), None);
        assert_eq!(
            announced_quota(&h, Some(&names)),
            Some(Observed {
                limit: None,
                remaining: 3,
                reset_in: Duration::from_secs(12)
            })
        );
    }

    #[test]
    fn announced_quota_forms() {
        assert_eq!(announced_quota(&HeaderMap::new(), None), None);
        // (the response's headers, the quota they announce: limit, remaining, seconds to reset)
        let forms: [(&[(&'static str, &str)], _); 2] = [
            (
                &[
                    ("x-ratelimit-limit", "20"),
                    ("x-ratelimit-remaining", "7"),
                    ("x-ratelimit-reset", "1"),
                ],
                (20, 7, 1),
            ),
            (
                &[("ratelimit", "limit=100, remaining=50, reset=30")],
                (100, 50, 30),
            ),
        ];
        for (headers, (limit, remaining, reset)) in forms {
            let mut h = HeaderMap::new();
            for (name, value) in headers {
                h.insert(*name, value.parse().unwrap());
            }
            assert_eq!(
                announced_quota(&h, None),
                Some(Observed {
                    limit: Some(limit),
                    remaining,
                    reset_in: Duration::from_secs(reset)
                }),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let src: SourceConfig = toml::from_str("name = \"s\"").unwrap();
        let c = SourceClient::new(&src, "sources[0]").unwrap();
        for n in 0..40 {
            let b = c.backoff(n);
            assert!(
                b <= c.backoff_cap && b <= c.backoff_base.saturating_mul(1 << n.min(16)),
                "{n}: {b:?}"
            );
        }
    }
}
