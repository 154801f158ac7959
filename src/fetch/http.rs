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
use reqwest::header::{AUTHORIZATION, HeaderMap, LOCATION, RETRY_AFTER};
use url::Url;

use crate::config::{Auth, ConfigError, SecretString, SourceConfig};
use crate::quota::{Observed, Pacer};

/// A successful response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes, exactly as received.
    pub body: Bytes,
    /// The request URL with secrets redacted (for headers and logs).
    pub url: String,
    /// Attempts it took.
    pub attempts: u32,
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
            Auth::Oauth2(_) => {
                return Err(crate::config::invalid(
                    format!("{at}.kind"),
                    "oauth2 is for sources (sources[].auth)",
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
        }
    }
}

/// How a source's requests authenticate.
pub enum SourceAuth {
    /// Fixed credentials.
    Fixed(ResolvedAuth),
    /// An OAuth 2.0 access token, shared by every source of the token id.
    OAuth2(std::sync::Arc<super::oauth::OAuth2>),
}

/// The HTTP client of one source.
pub struct SourceClient {
    http: reqwest::Client,
    auth: Option<SourceAuth>,
    max_retries: u32,
    /// `quota.mode = "naive"`: ignore quota headers, retry a 429 at once.
    naive: bool,
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

/// Query parameters whose values are secrets and never leave the process.
const SECRET_PARAMS: [&str; 8] = [
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
            (Some(a), _) => Some(SourceAuth::Fixed(ResolvedAuth::resolve(
                a,
                &format!("{at}.auth"),
            )?)),
        };
        let http = reqwest::Client::builder()
            .timeout(src.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("intake/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            // Redirects are followed by `send`, which decides where credentials may go.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::config::invalid(format!("{at}.base_url"), e.to_string()))?;
        Ok(Self {
            http,
            auth,
            max_retries: src.max_retries,
            naive: src
                .quota
                .as_ref()
                .is_some_and(crate::config::QuotaConfig::naive),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
        })
    }

    /// GETs a URL through the token's pacer, retrying as described in the module docs.
    ///
    /// # Errors
    /// [`HttpError`] when the request cannot succeed.
    pub async fn get(&self, url: &Url, pacer: &Pacer) -> Result<Response, HttpError> {
        let shown = redact(url);
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
                _ => None,
            };
            let permit = pacer.acquire().await;
            attempts += 1;
            let sent = self.send(url, bearer.as_ref()).await;
            // The headers (a pause, a lower limit) are known to the pacer before the permit
            // ends, so the request the end lets through already follows them.
            if let Ok(resp) = &sent
                && !self.naive
            {
                learn_quota(resp.headers(), pacer);
                if resp.status().as_u16() == 429 {
                    let wait = retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
                    pacer.pause_until(tokio::time::Instant::now() + wait);
                }
            }
            drop(permit);
            let outcome: Result<(), (String, Option<Duration>)> = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    if status == 429 && self.naive {
                        metrics::counter!(crate::telemetry::metric::FETCH_HTTP_429).increment(1);
                        if attempts > 50 + self.max_retries {
                            return Err(HttpError::Exhausted {
                                url: shown,
                                attempts,
                                last: "429 Too Many Requests".into(),
                            });
                        }
                        continue;
                    }
                    if status == 429 {
                        let wait = retry_after(&headers).unwrap_or(Duration::from_secs(1));
                        tracing::warn!(url = %shown, wait_ms = wait.as_millis() as u64, "429 Too Many Requests: pausing every stream of this token");
                        metrics::counter!(crate::telemetry::metric::FETCH_HTTP_429).increment(1);
                        // Counted separately: a 429 is the upstream asking us to wait, not a failure,
                        // but a source that never stops answering 429 still ends the page.
                        if attempts > 50 + self.max_retries {
                            return Err(HttpError::Exhausted {
                                url: shown,
                                attempts,
                                last: "429 Too Many Requests".into(),
                            });
                        }
                        continue;
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
                        let body = resp.bytes().await.unwrap_or_default();
                        let snippet =
                            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                        let e = HttpError::Client {
                            url: shown,
                            status,
                            body: format!("{snippet} (again with a fresh oauth2 access token)"),
                        };
                        o.paused(&e.to_string()).await;
                        return Err(e);
                    }
                    match resp.bytes().await {
                        Ok(body) if status < 300 => {
                            return Ok(Response {
                                status,
                                headers,
                                body,
                                url: shown,
                                attempts,
                            });
                        }
                        Ok(body) if (400..500).contains(&status) => {
                            let snippet =
                                String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                            return Err(HttpError::Client {
                                url: shown,
                                status,
                                body: snippet,
                            });
                        }
                        Ok(_) => Err((format!("HTTP {status}"), retry_after(&headers))),
                        Err(e) => Err((format!("reading body: {e}"), None)),
                    }
                }
                Err(why) => Err((why, None)),
            };
            let Err((why, after)) = outcome else {
                unreachable!("successes returned above")
            };
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
    async fn send(
        &self,
        url: &Url,
        bearer: Option<&SecretString>,
    ) -> Result<reqwest::Response, String> {
        let origin = url.origin();
        let mut at = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = at.origin() == origin;
            let mut req = self.http.get(at.clone());
            if same_origin {
                req = self.authorize(req, bearer);
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

/// `Retry-After` in seconds (the HTTP-date form is treated as 1 s).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    Some(match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(3600.0)),
        _ => Duration::from_secs(1),
    })
}

/// The quota a response announces: `X-RateLimit-Limit` / `-Remaining` / `-Reset` (seconds
/// until reset, or an epoch time), or the IETF `RateLimit: limit=..., remaining=...,
/// reset=...` form.
pub fn announced_quota(h: &HeaderMap) -> Option<Observed> {
    let num = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (limit, remaining, reset) = match (num("x-ratelimit-remaining"), num("x-ratelimit-reset")) {
        (Some(r), Some(s)) => (num("x-ratelimit-limit"), r, s),
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
fn learn_quota(h: &HeaderMap, pacer: &Pacer) {
    if let Some(o) = announced_quota(h) {
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
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
    }

    #[test]
    fn announced_quota_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(announced_quota(&h), None);
        h.insert("x-ratelimit-limit", "20".parse().unwrap());
        h.insert("x-ratelimit-remaining", "7".parse().unwrap());
        h.insert("x-ratelimit-reset", "1".parse().unwrap());
        assert_eq!(
            announced_quota(&h),
            Some(Observed {
                limit: Some(20),
                remaining: 7,
                reset_in: Duration::from_secs(1)
            })
        );
        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit",
            "limit=100, remaining=50, reset=30".parse().unwrap(),
        );
        assert_eq!(
            announced_quota(&h),
            Some(Observed {
                limit: Some(100),
                remaining: 50,
                reset_in: Duration::from_secs(30)
            })
        );
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
