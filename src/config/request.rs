//! How a stream's requests are made and read: method, body, pagination, answer format,
//! status rules and quota headers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// One status rule: responses whose status is in `status` (and whose body contains `body`,
/// when given) are handled by `action`. The first matching rule wins, a stream's before its
/// source's; without a match the defaults apply: 2xx lands, 429 (and a 403 that carries
/// rate-limit headers) waits, 5xx retries, any other status fails.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusRule {
    /// A status (`403`) or an inclusive range as text (`"400-499"`).
    pub status: StatusRange,
    /// Text the body must contain for the rule to apply.
    pub body: Option<String>,
    /// What to do.
    pub action: StatusAction,
}

impl StatusRule {
    /// Whether the rule applies to a response.
    pub fn matches(&self, status: u16, body: &[u8]) -> bool {
        self.status.0 <= status
            && status <= self.status.1
            && self
                .body
                .as_deref()
                .is_none_or(|b| memchr::memmem::find(body, b.as_bytes()).is_some())
    }
}

/// An inclusive range of HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u16),
            Text(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "`{s}` is not a status (100-599) or a range such as \"400-499\""
            ))
        };
        let (lo, hi) = match Raw::deserialize(d)? {
            Raw::One(n) => (n, n),
            Raw::Text(t) => {
                let (a, b) = t.split_once('-').unwrap_or((&t, &t));
                match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => return Err(bad(&t)),
                }
            }
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(bad(&format!("{lo}-{hi}")));
        }
        Ok(Self(lo, hi))
    }
}

/// What a status rule does with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusAction {
    /// Retry with backoff, as a 5xx (bounded by `max_retries`).
    Retry,
    /// A rate limit: pause every stream of the token until `Retry-After` (seconds or an HTTP
    /// date; 1 s without one) or the announced reset, then retry, as a 429.
    Wait,
    /// Land nothing and go on as after an empty page (counted in
    /// `intake_fetch_skipped_pages_total`).
    Skip,
    /// Pause the stream with the status and body as the reason.
    Fail,
}

/// Quota header names (GitHub `X-RateLimit-*`, Shopify `X-Shopify-Shop-Api-Call-Limit` aside).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaHeaders {
    /// Header of the requests left in the window.
    pub remaining: String,
    /// Header of the window's reset: seconds until it, or an epoch time in seconds.
    pub reset: String,
    /// Header of the window's size in requests.
    pub limit: Option<String>,
}

/// The format of a stream's answers (`format`). Landed pages carry it in `intake.format`, so a
/// page is split as it was fetched even after the stream's configuration changes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON document; the records at the stream's `records` pointer.
    #[default]
    Json,
    /// JSON Lines: one JSON value per line (blank lines skipped).
    Jsonl,
    /// RFC 4180 CSV with a header row naming the fields.
    Csv,
}

impl Format {
    /// The name used in configuration and in `intake.format`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }

    /// Reads an `intake.format` value.
    pub fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"json" => Some(Format::Json),
            b"jsonl" => Some(Format::Jsonl),
            b"csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The HTTP method of a stream's requests.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`.
    #[default]
    Get,
    /// `POST`, usually with a `body`.
    Post,
}

/// A request body.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// A JSON document (`Content-Type: application/json`).
    Json(serde_json::Value),
    /// Form fields (`application/x-www-form-urlencoded`).
    Form(BTreeMap<String, String>),
    /// A GraphQL request: `{"query": ..., "variables": ...}` as JSON.
    Graphql {
        /// The query document.
        query: String,
        /// Its variables (placeholders are filled in here).
        #[serde(default)]
        variables: serde_json::Map<String, serde_json::Value>,
    },
}

/// Pagination styles.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// An opaque token in the body (`next_pointer`), sent back in `param`.
    Cursor {
        /// Query parameter carrying the token.
        #[serde(default = "p_cursor")]
        param: String,
        /// JSON pointer of the next token in the body; absent or null: last page.
        #[serde(default = "p_next_cursor")]
        next_pointer: String,
        /// Query parameter of the page size.
        #[serde(default = "p_limit")]
        size_param: String,
    },
    /// `Link: <url>; rel="next"` response header.
    Link {
        /// Query parameter of the page size on the first request (GitHub: `per_page`); absent:
        /// none is sent and the API's default page size applies. Later requests follow the
        /// link as given.
        size_param: Option<String>,
    },
    /// The next page's URL in the body (Zendesk `/links/next`, Salesforce
    /// `/nextRecordsUrl`, Microsoft Graph `/@odata.nextLink`): absolute or relative to the
    /// base URL, followed only on the source's origin. Absent, null or empty: last page.
    NextUrl {
        /// JSON pointer of the URL.
        pointer: String,
        /// Query parameter of the page size on the first request; absent: none is sent.
        size_param: Option<String>,
        /// JSON pointer of a has-more flag (Zendesk `/meta/has_more`): false ends the sync
        /// even when the page still carries a next URL.
        has_more: Option<String>,
        /// JSON pointer of an end flag (Zendesk's export `/end_of_stream`, Salesforce
        /// `/done`): true ends the sync even when the page still carries a next URL.
        done: Option<String>,
    },
    /// GraphQL connections: the body's `{cursor}` placeholder gets `pageInfo.endCursor` while
    /// `pageInfo.hasNextPage` is true.
    Graphql {
        /// JSON pointer of `endCursor` (`/data/orders/pageInfo/endCursor`).
        end_cursor: String,
        /// JSON pointer of `hasNextPage` (`/data/orders/pageInfo/hasNextPage`).
        has_next_page: String,
    },
    /// `page=N&per_page=M`, last page when fewer than M records come back, or when a stop
    /// pointer says so.
    Page {
        /// Query parameter of the page number (1-based).
        #[serde(default = "p_page")]
        param: String,
        /// Query parameter of the page size.
        #[serde(default = "p_per_page")]
        size_param: String,
        /// JSON pointer of a has-more flag: false ends the sync.
        has_more: Option<String>,
        /// JSON pointer of the total record count: the sync ends once that many were read.
        total: Option<String>,
    },
    /// `offset=N&limit=M`, last page as for `page`.
    Offset {
        /// Query parameter of the offset.
        #[serde(default = "p_offset")]
        param: String,
        /// Query parameter of the page size.
        #[serde(default = "p_limit")]
        size_param: String,
        /// JSON pointer of a has-more flag: false ends the sync.
        has_more: Option<String>,
        /// JSON pointer of the total record count: the sync ends once that many were read.
        total: Option<String>,
    },
    /// `starting_after=<last id>` with a `has_more` flag in the body.
    After {
        /// Query parameter carrying the last id.
        #[serde(default = "p_starting_after")]
        param: String,
        /// JSON pointer of the has-more flag.
        #[serde(default = "p_has_more")]
        has_more_pointer: String,
        /// Query parameter of the page size.
        #[serde(default = "p_limit")]
        size_param: String,
    },
}

impl Default for Pagination {
    fn default() -> Self {
        Self::Link { size_param: None }
    }
}

string_defaults! {
    fn p_cursor = "cursor";
    fn p_next_cursor = "/next_cursor";
    fn p_limit = "limit";
    fn p_page = "page";
    fn p_per_page = "per_page";
    fn p_offset = "offset";
    fn p_starting_after = "starting_after";
    fn p_has_more = "/has_more";
}

/// An asynchronous export (`export = { ... }` on a stream), modelled on Shopify's bulk
/// operations and Salesforce Bulk 2.0: the stream's own request (path, method, body, with
/// `{since}` for an incremental export) asks for it and answers its id; `status_path` is polled
/// under the token's quota until the state is one of `done` (its `files` are then downloaded,
/// each landed with the cursor in one transaction, in `format`) or of `failed` (the stream
/// pauses and the next attempt asks for a new export).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Where the export's state is read: a path below the base URL or a URL, with `{id}`.
    pub status_path: String,
    /// JSON pointer of the export's id in the answer that created it.
    #[serde(default = "e_id")]
    pub id: String,
    /// JSON pointer of the state in the status answer.
    #[serde(default = "e_state")]
    pub state: String,
    /// States meaning the files are ready.
    #[serde(default = "e_done")]
    pub done: Vec<String>,
    /// States meaning the export will never be ready.
    #[serde(default = "e_failed")]
    pub failed: Vec<String>,
    /// JSON pointer of the files in the status answer: an array of URLs (absolute, or below
    /// the base URL), or of objects with a `url` member; a single URL string is one file.
    #[serde(default = "e_files")]
    pub files: String,
    /// Time between two looks at the state.
    #[serde(default = "e_poll_every", with = "humantime_serde")]
    pub poll_every: Duration,
    /// Longest wait for the files; longer counts as failed.
    #[serde(default = "e_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// `DELETE` the export (`status_path`) once every file has landed.
    #[serde(default = "super::defaults::yes")]
    pub cleanup: bool,
}

/// `backfill = { start, step, concurrency, max_records_per_window }`: a stream's first sync
/// reads its history in time windows, several at once.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// Where history starts (RFC 3339): no record's incremental field is older.
    pub start: String,
    /// The width of a window.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Windows read at once, each with its own transactional id.
    #[serde(default = "b_concurrency")]
    pub concurrency: u32,
    /// A window that has read this many records goes on as a new window from the last
    /// incremental-field value it read (search APIs that stop at 10 000 results). 0: no cap.
    #[serde(default)]
    pub max_records_per_window: u64,
}

fn b_concurrency() -> u32 {
    4
}

impl BackfillConfig {
    /// `start` as a time (checked when the config is loaded).
    pub fn start_time(&self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::parse(&self.start, &time::format_description::well_known::Rfc3339)
            .ok()
    }
}

string_defaults! {
    fn e_id = "/id";
    fn e_state = "/status";
    fn e_files = "/files";
}
fn e_done() -> Vec<String> {
    vec!["completed".into()]
}
fn e_failed() -> Vec<String> {
    vec!["failed".into(), "canceled".into(), "expired".into()]
}
fn e_poll_every() -> Duration {
    Duration::from_secs(2)
}
fn e_max_wait() -> Duration {
    Duration::from_secs(6 * 3600)
}
