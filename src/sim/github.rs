//! GitHub-shaped mode: `GET /repos/{owner}/{repo}/issues` as GitHub's REST API serves it, so
//! `examples/sources/github.toml` can run against the simulator (and against Prism validating
//! each request and answer with GitHub's own OpenAPI description in between, see
//! `tests/github.rs`).
//!
//! The issues are a view of the `customers` stream: customer `cus_000123` is issue number 123
//! with id `1000000123`, open while the customer is active and closed otherwise; every write to
//! a customer is a change of its issue (`updated_at` moves on, `comments` follow the version).
//! The writer, `/admin/writes`, the quota and the faults work as for `/v1`.
//!
//! | parameter   | GitHub's meaning, kept here |
//! |-------------|------------------------------|
//! | `state`     | `open` (default), `closed`, `all` |
//! | `sort`      | `created` (default), `updated`, `comments` |
//! | `direction` | `desc` (default), `asc` |
//! | `since`     | only issues updated at or after this ISO 8601 time |
//! | `per_page`  | 30 by default, at most 100 (more is served as 100) |
//! | `page`      | 1-based page number |
//!
//! The answer is a bare JSON array of issue objects with the members GitHub's `issue` schema
//! requires (timestamps in whole seconds, `YYYY-MM-DDTHH:MM:SSZ`), `Link` with `rel="next"`,
//! `"last"`, `"first"`, `"prev"` (URLs on the `--github-public-url` origin, else the request's
//! `Host`, carrying the request's own parameters), and GitHub's `X-RateLimit-Limit`,
//! `-Remaining`, `-Used`, `-Reset` (epoch seconds) and `-Resource` headers from the simulator's
//! quota. Other parameters are ignored, as GitHub does, and counted; a bad value of a known one
//! is GitHub's 422 `Validation Failed`; another repository is GitHub's 404.
//!
//! **Secondary rate limits.** With `--github-secondary-limit-every N`, every Nth request
//! (counting those that arrive while no limit is in force) is refused as GitHub refuses it: 403
//! with the body `You have exceeded a secondary rate limit…` and a `Retry-After` giving
//! `--github-secondary-limit-wait` in whole seconds (rounded up) the first time, the HTTP date
//! it ends (rounded up to the second) the next time, and so on alternately. A request arriving
//! before the limit ended is refused again and counted as early: a client that honours
//! `Retry-After` makes none.
//!
//! `GET /admin/github/stats` counts every request and what it got; `GET /admin/github/truth`
//! lists the live issues with their `updated_at`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use super::clock::{self, format_ms, parse_rfc3339_ns};
use super::data::Stream;
use super::error::SimError;
use super::pagination::whole_in;
use super::state::SimState;
use super::store::Filter;

/// The stream whose records are the issues.
const ISSUES_OF: Stream = Stream::Customers;
/// Issue ids are this plus the issue number.
const ID_BASE: u64 = 1_000_000_000;
/// GitHub's default and largest page sizes.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// GitHub's documented secondary rate limit answer.
const SECONDARY_MESSAGE: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:SIM.";
const SECONDARY_DOCS: &str = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits";
const DOCS: &str = "https://docs.github.com/rest/issues/issues#list-repository-issues";

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Flags of the GitHub-shaped mode (part of `intake sim`'s flags).
#[derive(clap::Args, Debug, Clone)]
pub struct GithubArgs {
    /// Repository `OWNER/NAME` whose issues `GET /repos/{owner}/{repo}/issues` serves (a view
    /// of the customers stream).
    #[arg(
        long = "github-repo",
        env = "INTAKE_SIM_GITHUB_REPO",
        default_value = "apache/kafka"
    )]
    pub repo: String,

    /// Absolute base URL clients reach the API at (a proxy in front of the simulator), for
    /// `Link` headers and the URLs inside issues; default `http://<the request's Host>`.
    #[arg(long = "github-public-url", env = "INTAKE_SIM_GITHUB_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Refuse every Nth issues request with a GitHub secondary rate limit (403 with
    /// `Retry-After`); 0: never.
    #[arg(
        long = "github-secondary-limit-every",
        env = "INTAKE_SIM_GITHUB_SECONDARY_LIMIT_EVERY",
        default_value_t = 0
    )]
    pub secondary_every: u64,

    /// How long a secondary rate limit lasts (at least 1s).
    #[arg(
        long = "github-secondary-limit-wait",
        env = "INTAKE_SIM_GITHUB_SECONDARY_LIMIT_WAIT",
        default_value = "1s",
        value_parser = parse_duration
    )]
    pub secondary_wait: Duration,
}

impl GithubArgs {
    /// Checks the flags; names the offending one.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] naming the first bad flag.
    pub fn validate(&self) -> Result<(), SimError> {
        if repo_parts(&self.repo).is_none() {
            return Err(SimError::config(
                "--github-repo",
                format!("must be OWNER/NAME, got '{}'", self.repo),
            ));
        }
        if let Some(u) = &self.public_url
            && (!matches!(u.scheme(), "http" | "https") || u.query().is_some() || u.path() != "/")
        {
            return Err(SimError::config(
                "--github-public-url",
                "must be an http(s) URL without path or query, e.g. http://127.0.0.1:4010",
            ));
        }
        if self.secondary_wait < Duration::from_secs(1) {
            return Err(SimError::config(
                "--github-secondary-limit-wait",
                "must be at least 1s (Retry-After counts whole seconds)",
            ));
        }
        Ok(())
    }
}

fn repo_parts(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (ok(owner) && ok(name)).then_some((owner, name))
}

/// What the mode served, for `GET /admin/github/stats`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct GithubCounts {
    /// Every request to a GitHub route, whatever it got (401s and 429s of the guard too).
    pub requests: u64,
    /// Issue pages answered 200.
    pub pages: u64,
    /// Issues in those pages.
    pub issues: u64,
    /// Requests refused with a new secondary rate limit.
    pub secondary_limits: u64,
    /// ... of them with `Retry-After` in seconds.
    pub retry_after_seconds: u64,
    /// ... of them with `Retry-After` as an HTTP date.
    pub retry_after_dates: u64,
    /// Requests that arrived while a secondary limit was in force (refused again).
    pub early: u64,
    /// Requests answered 422 for a bad parameter value.
    pub invalid: u64,
    /// Requests for another repository (404).
    pub not_found: u64,
    /// Requests that carried `since`.
    pub with_since: u64,
    /// The `per_page` each request past the limits asked for (`"absent"`: none, so 30).
    pub per_page: BTreeMap<String, u64>,
    /// Parameters GitHub knows for this endpoint, or does not, that the simulator ignored, by
    /// name.
    pub ignored_params: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: GithubCounts,
    /// Requests that arrived while no limit was in force (the "every Nth" count).
    admitted: u64,
    /// The secondary limit in force until this unix time (ms).
    blocked_until_ms: Option<i64>,
}

/// The mode's settings and counters, shared by its handlers.
#[derive(Debug)]
pub struct Github {
    owner: String,
    name: String,
    public_url: Option<String>,
    every: u64,
    wait: Duration,
    inner: Mutex<Inner>,
}

impl Github {
    /// From validated flags.
    pub fn new(args: &GithubArgs) -> Self {
        let (owner, name) = repo_parts(&args.repo).unwrap_or(("apache", "kafka"));
        Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
            public_url: args
                .public_url
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            every: args.secondary_every,
            wait: args.secondary_wait,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the github counters' lock was poisoned by an earlier panic")
    }

    /// A copy of the counters.
    pub fn counts(&self) -> GithubCounts {
        self.inner().counts.clone()
    }
}

/// The GitHub routes: the issues list behind the simulator's guard (auth, quota, faults), and
/// the mode's admin endpoints.
pub fn router(state: Arc<SimState>, args: &GithubArgs) -> axum::Router<Arc<SimState>> {
    let github = Arc::new(Github::new(args));
    let api = Router::new()
        .route("/repos/{owner}/{repo}/issues", get(list_issues))
        .layer(middleware::from_fn_with_state(state, super::api::guard))
        .layer(middleware::from_fn(github_headers));
    Router::new()
        .merge(api)
        .route("/admin/github/stats", get(stats))
        .route("/admin/github/truth", get(truth))
        .layer(Extension(github))
}

/// Counts the request, and turns the guard's quota headers into GitHub's: `X-RateLimit-Reset`
/// in epoch seconds, plus `-Used` and `-Resource`.
async fn github_headers(
    Extension(github): Extension<Arc<Github>>,
    request: Request,
    next: Next,
) -> Response {
    github.inner().counts.requests += 1;
    let mut response = next.run(request).await;
    let num = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let (Some(limit), Some(remaining), Some(reset)) = (
        num("x-ratelimit-limit"),
        num("x-ratelimit-remaining"),
        num("x-ratelimit-reset"),
    ) {
        let h = response.headers_mut();
        h.insert("x-ratelimit-reset", (clock::now().as_secs() + reset).into());
        h.insert("x-ratelimit-used", limit.saturating_sub(remaining).into());
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    }
    response
}

/// A GitHub error answer: `{"message", "documentation_url", "status"}`.
fn github_error(status: StatusCode, message: &str, docs: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": docs,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// GitHub's 422 for a bad parameter value.
fn invalid(github: &Github, field: &str, value: &str) -> Response {
    github.inner().counts.invalid += 1;
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "message": "Validation Failed",
            "errors": [{ "resource": "Issue", "field": field, "code": "invalid", "value": value }],
            "documentation_url": DOCS,
            "status": "422",
        })),
    )
        .into_response()
}

/// `Wed, 21 Oct 2015 07:28:00 GMT` (RFC 9110's IMF-fixdate) of unix seconds.
pub fn http_date(unix_secs: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .expect("simulator times lie within year 9999");
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        &at.weekday().to_string()[..3],
        at.day(),
        &at.month().to_string()[..3],
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The secondary-limit decision for a request arriving at `now_ms`: `Some` is the 403 to send.
fn secondary_limit(github: &Github, now_ms: i64) -> Option<Response> {
    let retry_after = {
        let mut inner = github.inner();
        if let Some(until) = inner.blocked_until_ms.filter(|u| *u > now_ms) {
            inner.counts.early += 1;
            let secs = (until - now_ms + 999) / 1000;
            secs.to_string()
        } else {
            inner.blocked_until_ms = None;
            inner.admitted += 1;
            if github.every == 0 || !inner.admitted.is_multiple_of(github.every) {
                return None;
            }
            let wait_ms = i64::try_from(github.wait.as_millis()).unwrap_or(i64::MAX / 2);
            let by_date = inner.counts.secondary_limits % 2 == 1;
            inner.counts.secondary_limits += 1;
            if by_date {
                inner.counts.retry_after_dates += 1;
                let until_s = (now_ms + wait_ms + 999).div_euclid(1000);
                inner.blocked_until_ms = Some(until_s * 1000);
                http_date(until_s)
            } else {
                inner.counts.retry_after_seconds += 1;
                let secs = (wait_ms + 999) / 1000;
                inner.blocked_until_ms = Some(now_ms + secs * 1000);
                secs.to_string()
            }
        }
    };
    let mut response = github_error(StatusCode::FORBIDDEN, SECONDARY_MESSAGE, SECONDARY_DOCS);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after).expect("a date or a number is a header value"),
    );
    Some(response)
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum StateFilter {
    Open,
    Closed,
    All,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum SortBy {
    Created,
    Updated,
    Comments,
}

/// A parsed issues request.
#[derive(Debug)]
struct IssuesQuery {
    state: StateFilter,
    sort: SortBy,
    ascending: bool,
    since_ns: Option<i128>,
    per_page: usize,
    page: usize,
    /// Every pair as given, for the `Link` URLs.
    pairs: Vec<(String, String)>,
}

/// The value `name` stands for among `choices`.
fn pick<T: Copy>(name: &str, choices: &[(&str, T)]) -> Option<T> {
    choices.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The `state` values, by filter.
const STATES: [(&str, StateFilter); 3] = [
    ("open", StateFilter::Open),
    ("closed", StateFilter::Closed),
    ("all", StateFilter::All),
];

/// The `sort` values, by order.
const SORTS: [(&str, SortBy); 3] = [
    ("created", SortBy::Created),
    ("updated", SortBy::Updated),
    ("comments", SortBy::Comments),
];

/// Parses the query string; `Err((field, value))` for a bad value.
fn parse_query(github: &Github, query: &str) -> Result<IssuesQuery, (String, String)> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let mut q = IssuesQuery {
        state: StateFilter::Open,
        sort: SortBy::Created,
        ascending: false,
        since_ns: None,
        per_page: DEFAULT_PER_PAGE,
        page: 1,
        pairs: Vec::new(),
    };
    let mut per_page_seen = "absent".to_owned();
    let bad = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    for (k, v) in &pairs {
        match k.as_str() {
            "state" => {
                q.state = pick(v, &STATES).ok_or_else(|| bad(k, v))?;
            }
            "sort" => {
                q.sort = pick(v, &SORTS).ok_or_else(|| bad(k, v))?;
            }
            "direction" => {
                q.ascending =
                    pick(v, &[("asc", true), ("desc", false)]).ok_or_else(|| bad(k, v))?;
            }
            "since" => {
                q.since_ns = Some(parse_rfc3339_ns(v).map_err(|_| bad(k, v))?);
            }
            "per_page" => {
                per_page_seen.clone_from(v);
                let n = v.parse::<usize>().ok().filter(|n| *n >= 1);
                q.per_page = n.ok_or_else(|| bad(k, v))?.min(MAX_PER_PAGE);
            }
            "page" => {
                q.page = whole_in(v, 1..=1_000_000).ok_or_else(|| bad(k, v))?;
            }
            other => {
                *github
                    .inner()
                    .counts
                    .ignored_params
                    .entry(other.to_owned())
                    .or_default() += 1;
            }
        }
    }
    let mut inner = github.inner();
    *inner.counts.per_page.entry(per_page_seen).or_default() += 1;
    inner.counts.with_since += u64::from(q.since_ns.is_some());
    drop(inner);
    q.pairs = pairs;
    Ok(q)
}

/// One issue, derived from a customer record.
struct Issue {
    number: u64,
    created_ms: i64,
    updated_ms: i64,
    comments: u64,
    open: bool,
    json: Value,
}

/// The issue number of a customer id (`cus_000123` → 123).
pub fn issue_number(customer_id: &str) -> Option<u64> {
    customer_id.rsplit_once('_')?.1.parse().ok()
}

/// The issue id of a customer id (`cus_000123` → 1000000123).
pub fn issue_id(customer_id: &str) -> Option<u64> {
    issue_number(customer_id).map(|n| ID_BASE + n)
}

/// GitHub's timestamp form: whole seconds, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn github_time(ms: i64) -> String {
    let text = format_ms(ms - ms.rem_euclid(1000));
    text.replace(".000Z", "Z")
}

fn time_ms(record: &Value, field: &str) -> Option<i64> {
    let ns = parse_rfc3339_ns(record.get(field)?.as_str()?).ok()?;
    i64::try_from(ns.div_euclid(1_000_000)).ok()
}

/// GitHub's `simple-user` for a login.
fn user(base: &str, login: &str, id: u64) -> Value {
    let u = format!("{base}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_kgDO{id:08}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": u,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": "User",
        "user_view_type": "public",
        "site_admin": false,
    })
}

impl Github {
    /// The issue of a customer record (its served JSON); `None` for a record without an id
    /// or times (a drifted one).
    fn issue(&self, base: &str, record: &Value) -> Option<Issue> {
        let customer_id = record.get("id")?.as_str()?;
        let number = issue_number(customer_id)?;
        let id = ID_BASE + number;
        let created_ms = time_ms(record, "created_at")?;
        let updated_ms = time_ms(record, "updated_at")?;
        let version = record.get("version").and_then(Value::as_u64).unwrap_or(1);
        let status = record.get("status").and_then(Value::as_str).unwrap_or("");
        let name = record
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("someone");
        let email = record.get("email").and_then(Value::as_str).unwrap_or("");
        let login: String = email
            .split('@')
            .next()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let login = if login.is_empty() {
            format!("user-{number}")
        } else {
            login
        };
        let open = status == "active";
        let (label, color, about) = match status {
            "active" => ("bug", "d73a4a", "Something isn't working"),
            "inactive" => ("question", "d876e3", "Further information is requested"),
            _ => ("wontfix", "ffffff", "This will not be worked on"),
        };
        let repo = format!("{base}/repos/{}/{}", self.owner, self.name);
        let url = format!("{repo}/issues/{number}");
        let comments = version.saturating_sub(1);
        let json = json!({
            "id": id,
            "node_id": format!("I_kwDOSIM{number:08}"),
            "url": url,
            "repository_url": repo,
            "labels_url": format!("{url}/labels{{/name}}"),
            "comments_url": format!("{url}/comments"),
            "events_url": format!("{url}/events"),
            "html_url": format!("https://github.com/{}/{}/issues/{number}", self.owner, self.name),
            "timeline_url": format!("{url}/timeline"),
            "number": number,
            "state": if open { "open" } else { "closed" },
            "state_reason": if open { Value::Null } else { json!("completed") },
            "title": format!("{name} reports issue {number}"),
            "body": format!("Reported by {name}. Revision {version} of this issue."),
            "user": user(base, &login, 100_000 + number),
            "labels": [{
                "id": 200_000_000 + label.len() as u64,
                "node_id": format!("LA_kwDOSIM{label}"),
                "url": format!("{repo}/labels/{label}"),
                "name": label,
                "description": about,
                "color": color,
                "default": true,
            }],
            "assignee": null,
            "assignees": [],
            "milestone": null,
            "locked": false,
            "active_lock_reason": null,
            "comments": comments,
            "created_at": github_time(created_ms),
            "updated_at": github_time(updated_ms),
            "closed_at": if open { Value::Null } else { json!(github_time(updated_ms)) },
            "author_association": "CONTRIBUTOR",
        });
        Some(Issue {
            number,
            created_ms,
            updated_ms,
            comments,
            open,
            json,
        })
    }

    /// Every live issue the filter admits, parsed (the store's read lock is held only while
    /// its records' `Arc`s are cloned).
    fn issues(&self, state: &SimState, base: &str, since_ns: Option<i128>) -> Vec<Issue> {
        let listed = {
            let store = state.store();
            let filter = Filter {
                since_ns,
                before_ns: None,
            };
            store.page_at(ISSUES_OF, filter, 0, usize::MAX).0
        };
        listed
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l.json).ok())
            .filter_map(|record| self.issue(base, &record))
            .collect()
    }
}

/// The `Link` URL of `page` for a request: its own parameters, `page` replaced.
fn page_url(base: &str, path: &str, pairs: &[(String, String)], page: usize) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
        s.append_pair(k, v);
    }
    s.append_pair("page", &page.to_string());
    format!("{base}{path}?{}", s.finish())
}

/// `GET /repos/{owner}/{repo}/issues`.
async fn list_issues(
    State(state): State<Arc<SimState>>,
    Extension(github): Extension<Arc<Github>>,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if owner != github.owner || repo != github.name {
        github.inner().counts.not_found += 1;
        return github_error(
            StatusCode::NOT_FOUND,
            "Not Found",
            "https://docs.github.com/rest",
        );
    }
    if let Some(refused) = secondary_limit(&github, clock::now_ms()) {
        return refused;
    }
    let q = match parse_query(&github, query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err((field, value)) => return invalid(&github, &field, &value),
    };
    let base = github.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| state.local_addr.to_string(), str::to_owned);
        format!("http://{host}")
    });
    let mut issues: Vec<Issue> = github
        .issues(&state, &base, q.since_ns)
        .into_iter()
        .filter(|i| match q.state {
            StateFilter::Open => i.open,
            StateFilter::Closed => !i.open,
            StateFilter::All => true,
        })
        .collect();
    issues.sort_by_key(|i| {
        let key = match q.sort {
            SortBy::Created => i.created_ms,
            SortBy::Updated => i.updated_ms,
            SortBy::Comments => i64::try_from(i.comments).unwrap_or(i64::MAX),
        };
        (key, i.number)
    });
    if !q.ascending {
        issues.reverse();
    }
    let last = issues.len().div_ceil(q.per_page).max(1);
    let start = (q.page - 1).saturating_mul(q.per_page);
    let page: Vec<&Value> = issues
        .iter()
        .skip(start)
        .take(q.per_page)
        .map(|i| &i.json)
        .collect();
    let body = serde_json::to_vec(&page).expect("JSON values serialize");
    {
        let mut inner = github.inner();
        inner.counts.pages += 1;
        inner.counts.issues += page.len() as u64;
    }
    let path = format!("/repos/{}/{}/issues", github.owner, github.name);
    let url = |p: usize| page_url(&base, &path, &q.pairs, p);
    let mut links = Vec::new();
    if q.page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url((q.page - 1).min(last))));
    }
    if q.page < last {
        links.push(format!("<{}>; rel=\"next\"", url(q.page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
    }
    if q.page > 1 {
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(
        "x-github-media-type",
        HeaderValue::from_static("github.v3; format=json"),
    );
    if !links.is_empty() {
        match HeaderValue::from_str(&links.join(", ")) {
            Ok(v) => {
                h.insert(header::LINK, v);
            }
            Err(_) => {
                return github_error(
                    StatusCode::BAD_REQUEST,
                    "the Host header cannot form a Link URL",
                    DOCS,
                );
            }
        }
    }
    response
}

#[derive(Serialize)]
struct StatsOut {
    repo: String,
    #[serde(flatten)]
    counts: GithubCounts,
    /// Unix ms until which a secondary limit is in force, if one is.
    blocked_until_ms: Option<i64>,
}

/// `GET /admin/github/stats`.
async fn stats(Extension(github): Extension<Arc<Github>>) -> Json<StatsOut> {
    let inner = github.inner();
    Json(StatsOut {
        repo: format!("{}/{}", github.owner, github.name),
        counts: inner.counts.clone(),
        blocked_until_ms: inner.blocked_until_ms,
    })
}

#[derive(Serialize)]
struct IssueTruth {
    number: u64,
    state: &'static str,
    updated_at: String,
}

/// `GET /admin/github/truth`: every live issue by id (a consistent snapshot: one read lock).
async fn truth(
    State(state): State<Arc<SimState>>,
    Extension(github): Extension<Arc<Github>>,
) -> Json<Value> {
    let issues: BTreeMap<String, IssueTruth> = github
        .issues(&state, "http://sim", None)
        .into_iter()
        .map(|i| {
            (
                (ID_BASE + i.number).to_string(),
                IssueTruth {
                    number: i.number,
                    state: if i.open { "open" } else { "closed" },
                    updated_at: github_time(i.updated_ms),
                },
            )
        })
        .collect();
    Json(json!({
        "repo": format!("{}/{}", github.owner, github.name),
        "issues": issues,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(every: u64) -> Github {
        Github::new(&GithubArgs {
            repo: "apache/kafka".into(),
            public_url: None,
            secondary_every: every,
            secondary_wait: Duration::from_millis(1500),
        })
    }

    #[test]
    fn times_and_ids_in_githubs_forms() {
        assert_eq!(github_time(clock::BASE_MS + 1_999), "2024-01-01T00:00:01Z");
        assert_eq!(http_date(1_445_412_480), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(issue_id("cus_000123"), Some(1_000_000_123));
        assert_eq!(issue_number("nope"), None);
    }

    #[test]
    fn secondary_limits_alternate_forms_and_count_early_requests() {
        let g = github(2);
        let t0 = 1_700_000_000_250;
        assert!(secondary_limit(&g, t0).is_none());
        let r = secondary_limit(&g, t0 + 10).expect("every 2nd");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // 1.5 s rounds up to 2 whole seconds.
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let early = secondary_limit(&g, t0 + 1_000).expect("still limited");
        assert_eq!(early.headers()[header::RETRY_AFTER], "2");
        assert!(secondary_limit(&g, t0 + 2_010).is_none(), "ended");
        let r = secondary_limit(&g, t0 + 2_020).expect("the next limit");
        // An HTTP date, rounded up to the second: 1_700_000_003_770 ms → …004 s.
        assert_eq!(r.headers()[header::RETRY_AFTER], http_date(1_700_000_004));
        assert!(secondary_limit(&g, t0 + 3_749).is_some(), "early");
        assert!(secondary_limit(&g, 1_700_000_004_000).is_none());
        let c = g.counts();
        assert_eq!(
            (
                c.secondary_limits,
                c.retry_after_seconds,
                c.retry_after_dates,
                c.early
            ),
            (2, 1, 1, 2)
        );
        assert!(secondary_limit(&github(0), t0).is_none());
    }

    #[test]
    fn queries_parse_as_github_reads_them() {
        let g = github(0);
        let q = parse_query(
            &g,
            "state=all&sort=updated&direction=asc&since=2024-01-01T00:00:00Z&per_page=500&page=3&milestone=*",
        )
        .unwrap();
        assert_eq!(
            (q.state, q.sort, q.ascending, q.per_page, q.page),
            (StateFilter::All, SortBy::Updated, true, 100, 3)
        );
        assert_eq!(q.since_ns, Some(i128::from(clock::BASE_MS) * 1_000_000));
        for bad in [
            "state=any",
            "since=yesterday",
            "per_page=0",
            "page=x",
            "direction=up",
        ] {
            assert!(parse_query(&g, bad).is_err(), "{bad}");
        }
        let c = g.counts();
        assert_eq!(c.ignored_params["milestone"], 1);
        assert_eq!(c.per_page["500"], 1);
        assert_eq!(c.with_since, 1);
        assert!(parse_query(&g, "").is_ok());
        assert_eq!(g.counts().per_page["absent"], 1);
    }

    #[test]
    fn link_urls_keep_the_request_parameters() {
        let pairs = vec![
            ("per_page".to_owned(), "100".to_owned()),
            ("page".to_owned(), "1".to_owned()),
            ("since".to_owned(), "2024-01-01T00:00:00Z".to_owned()),
        ];
        assert_eq!(
            page_url("http://h:1", "/repos/a/b/issues", &pairs, 2),
            "http://h:1/repos/a/b/issues?per_page=100&since=2024-01-01T00%3A00%3A00Z&page=2"
        );
    }

    #[test]
    fn flags_are_checked() {
        let mut a = GithubArgs {
            repo: "apache".into(),
            public_url: None,
            secondary_every: 0,
            secondary_wait: Duration::from_secs(1),
        };
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("--github-repo")
        );
        a.repo = "apache/kafka".into();
        a.validate().unwrap();
        a.public_url = Some("http://127.0.0.1:4010/api".parse().unwrap());
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("--github-public-url")
        );
        a.public_url = Some("http://127.0.0.1:4010".parse().unwrap());
        a.secondary_wait = Duration::from_millis(500);
        assert!(a.validate().unwrap_err().to_string().contains("wait"));
    }
}
