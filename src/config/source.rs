//! Sources and streams: what to fetch, how to page, how to identify and order records.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::timefmt::TimeFormat;
use super::webhook::WebhookConfig;
use super::{ConfigError, SecretRef, check_name, defaults, invalid};

/// One upstream API (or push source) and its streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source name: part of topic names and keys (`<source>/<stream>`).
    pub name: String,
    /// Base URL every stream path is appended to (`https://api.example.com`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// How requests authenticate. Absent: no auth.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// The request quota of this source's token.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Per-request timeout.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of 5xx, timeouts and connection resets before a page is given up (backoff with
    /// full jitter between them).
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Webhook settings for `POST /v1/webhooks/<source>`. Absent: webhooks refused (404).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Headers sent with every request of every stream (`Stripe-Version`,
    /// `X-GitHub-Api-Version`); a stream's own `headers` override them by name. Values may hold
    /// placeholders (see [`StreamConfig::body`]).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// What a response status means, over the defaults (see [`StatusRule`]); a stream's own
    /// `on_status` rules are tried first.
    #[serde(default)]
    pub on_status: Vec<StatusRule>,
    /// Names of the quota headers to learn from, over the defaults (`X-RateLimit-*`, IETF
    /// `RateLimit`).
    #[serde(default)]
    pub quota_headers: Option<QuotaHeaders>,
    /// The streams of this source.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
}

/// Request authentication. Secrets are references (`{ env = "X" }` or `{ file = "p" }`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: SecretRef,
    },
    /// An API key in a header of your choice.
    ApiKey {
        /// Header name, e.g. `X-API-Key`.
        header: String,
        /// The key.
        key: SecretRef,
    },
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: SecretRef,
    },
    /// An API key in a query parameter of your choice (`?api_key=...`). The parameter is
    /// added when the request is sent, so request URLs in logs, headers and the DLQ never
    /// hold it.
    ApiKeyQuery {
        /// Query parameter name, e.g. `api_key`.
        param: String,
        /// The key.
        key: SecretRef,
    },
    /// OAuth 2.0: an access token from the provider's token endpoint, sent as
    /// `Authorization: Bearer`, refreshed before it expires (see `fetch::oauth`).
    Oauth2(OAuth2Config),
    /// A session token from a login request, renewed by logging in again after a 401 (see
    /// `fetch::session`).
    Session(super::session::SessionConfig),
}

/// `auth = { kind = "oauth2", ... }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The provider's token endpoint (`https://idp/realms/x/protocol/openid-connect/token`).
    pub token_url: String,
    /// `client_credentials` or `refresh_token`.
    pub grant: OAuth2Grant,
    /// The client id.
    pub client_id: String,
    /// The client secret. Required for `client_credentials`; optional for `refresh_token`
    /// (public clients have none).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// How the client authenticates to the token endpoint: `basic` (HTTP basic, RFC 6749's
    /// default) or `post` (`client_id`/`client_secret` in the form body).
    #[serde(default)]
    pub client_auth: OAuth2ClientAuth,
    /// Scopes to ask for (space-separated), if any.
    #[serde(default)]
    pub scope: Option<String>,
    /// `refresh_token` grant: the first refresh token. Once the owner has rotated it, the
    /// newer one stored (encrypted) in the `<prefix>.tokens` topic wins, until this value
    /// changes (a re-authorisation).
    #[serde(default)]
    pub refresh_token: Option<SecretRef>,
    /// `refresh_token` grant: the key that encrypts the stored refresh token, 32 bytes as 64
    /// hex characters (`openssl rand -hex 32`). Every fetch process needs the same key.
    #[serde(default)]
    pub token_key: Option<SecretRef>,
    /// Refresh this long before the access token expires (at most half its lifetime).
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    pub refresh_margin: Duration,
}

fn default_refresh_margin() -> Duration {
    Duration::from_secs(60)
}

/// OAuth 2.0 grant types intake can use.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OAuth2Grant {
    /// A confidential client's own token (RFC 6749 §4.4).
    ClientCredentials,
    /// A user's delegated token, renewed with a refresh token that the provider may rotate
    /// (single-use refresh tokens) (RFC 6749 §6).
    RefreshToken,
}

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OAuth2ClientAuth {
    /// `Authorization: Basic` with the client id and secret (`client_secret_basic`).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

impl OAuth2Config {
    pub(crate) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let u = url::Url::parse(&self.token_url)
            .map_err(|e| invalid(format!("{at}.token_url"), format!("not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(invalid(format!("{at}.token_url"), "must be http or https"));
        }
        if self.client_id.trim().is_empty() {
            return Err(invalid(format!("{at}.client_id"), "must not be empty"));
        }
        match self.grant {
            OAuth2Grant::ClientCredentials => {
                if self.client_secret.is_none() {
                    return Err(invalid(
                        format!("{at}.client_secret"),
                        "required for grant = \"client_credentials\"",
                    ));
                }
                for (field, set) in [
                    ("refresh_token", self.refresh_token.is_some()),
                    ("token_key", self.token_key.is_some()),
                ] {
                    if set {
                        return Err(invalid(
                            format!("{at}.{field}"),
                            "only for grant = \"refresh_token\"",
                        ));
                    }
                }
            }
            OAuth2Grant::RefreshToken => {
                for (field, set) in [
                    ("refresh_token", self.refresh_token.is_some()),
                    ("token_key", self.token_key.is_some()),
                ] {
                    if !set {
                        return Err(invalid(
                            format!("{at}.{field}"),
                            "required for grant = \"refresh_token\"",
                        ));
                    }
                }
            }
        }
        if self.refresh_margin.is_zero() {
            return Err(invalid(
                format!("{at}.refresh_margin"),
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// The quota of one API token. All streams of the source share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Identity of the token for quota ownership (`intake.quota` key); sources sharing one
    /// token must use the same id. Defaults to the source name.
    #[serde(default)]
    pub token_id: Option<String>,
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The quota window.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// `central` (default): one owner per token paces every stream of it, learns from headers,
    /// pauses the token on 429 and hands its state over in `intake.quota`. `naive`: every
    /// process paces its own streams at the full quota and retries a 429 at once — the
    /// rate-limit death spiral, kept only so `scripts/bench quota` can show the difference.
    #[serde(default)]
    pub mode: QuotaMode,
}

impl QuotaConfig {
    /// Whether this token runs in the benchmark-only `naive` mode.
    pub fn naive(&self) -> bool {
        self.mode == QuotaMode::Naive
    }
}

/// How a token's quota is enforced (see [`QuotaConfig::mode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// One owner per token (Kafka group assignment), state in `intake.quota`.
    #[default]
    Central,
    /// A limiter per process and immediate retries: for the benchmark only.
    Naive,
}

/// One stream of a source: an endpoint listing records of one entity type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stream name: part of topic names and keys.
    pub name: String,
    /// Path below the source's base URL (`/v1/customers`).
    #[serde(default)]
    pub path: Option<String>,
    /// Fixed query parameters sent with every request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer of the record array in a page (`/data`; empty: the page is the array).
    /// Not used with `format = "jsonl"` or `"csv"`, whose every line or row is a record.
    #[serde(default = "defaults::records_pointer")]
    pub records: String,
    /// What the API answers: `json` (default: a page with the records at `records`), `jsonl`
    /// (one JSON record per line) or `csv` (a header row, then one record per row; cells are
    /// typed by the schema). The page lands as received and validate splits it.
    #[serde(default)]
    pub format: Format,
    /// The primary key: a JSON pointer inside a record (`"/id"`), or several for a composite
    /// key (`["/customer_id", "/id"]`, which needs `key_format = "avro"`).
    pub primary_key: PrimaryKey,
    /// How the valid and curated topics' keys are written: `string` (default: the primary key's
    /// UTF-8 text, no schema) or `avro` (a Confluent-framed Avro record of the key field(s),
    /// registered under the topic's key subject; docs/DOWNSTREAM.md).
    #[serde(default)]
    pub key_format: KeyFormat,
    /// JSON pointer of the version inside a record: an integer sequence, or a timestamp (RFC
    /// 3339 unless `version_format` says otherwise). Dedup keeps the highest; equal versions
    /// are broken by content hash. Absent: the stream's records carry no version, and the
    /// later fetch wins — each landed page carries a stamp fetch assigns (`intake.stamp`,
    /// increasing per stream across restarts and owners) that dedup orders by instead.
    #[serde(default)]
    pub version: Option<String>,
    /// How `version` is read: absent, an integer or an RFC 3339 string; `rfc3339`,
    /// `epoch_s`, `epoch_ms` (a number or a numeric string) or a pattern: a timestamp.
    #[serde(default)]
    pub version_format: Option<TimeFormat>,
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: Method,
    /// Status rules tried before the source's (see [`StatusRule`]).
    #[serde(default)]
    pub on_status: Vec<StatusRule>,
    /// Headers of this stream's requests, over the source's `headers`. Values may hold
    /// placeholders.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body (with `method = "POST"`): `{ json = {...} }`, `{ form = {...} }` or
    /// `{ graphql = { query = "...", variables = {...} } }`. Strings in it may hold the
    /// placeholders `{cursor}`, `{since}`, `{until}`, `{page_size}` and `{page}`, as may the
    /// path, `query` values and header values. A JSON string that is exactly one placeholder
    /// becomes a number for `{page_size}` and `{page}`, and is left out (its member or array
    /// element removed) when the placeholder has no value (`{cursor}` on the first page).
    #[serde(default)]
    pub body: Option<Body>,
    /// How pages follow each other.
    #[serde(default)]
    pub pagination: Pagination,
    /// Page size sent in the style's size parameter.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// Incremental sync by a timestamp filter. Absent: every sync is a full sync.
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// Time between the end of one sync and the start of the next.
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Full reconciliation every so often (catches backdated updates and deletes).
    #[serde(default, with = "humantime_serde")]
    pub full_sync_every: Option<Duration>,
    /// Tombstone keys that a completed full sync did not see.
    #[serde(default)]
    pub detect_deletes: bool,
    /// Do not land a page again when this process already landed every record on it unchanged
    /// (default true): look-back windows and re-read streams without an incremental filter
    /// would land each record once per poll. Full syncs with `detect_deletes` always land
    /// every page.
    #[serde(default = "defaults::yes")]
    pub skip_unchanged: bool,
    /// What validate does with a record that does not match the schema.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// Most pages per transaction (one cursor record each transaction): a backlog fetched at
    /// full speed fills it; once the quota would make the next request wait, the pages in hand
    /// commit at once instead of waiting with it.
    #[serde(default = "defaults::pages_per_transaction")]
    pub pages_per_transaction: u32,
    /// Largest record (Avro value, key and headers) kept whole in the stream's valid and
    /// curated topics: `intake topics apply` sets it as their `max.message.bytes`, bounded by
    /// the broker's `message.max.bytes`. Larger records travel by claim-check: the body goes
    /// to the blob store and the topics carry a small registered reference
    /// (docs/DOWNSTREAM.md).
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
}

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
    #[serde(default)]
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
    #[serde(default)]
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

impl StreamConfig {
    /// Where a page's records are once it is JSON: `records`, or the page itself for JSON
    /// Lines and CSV (normalised to an array of records).
    pub fn records_pointer(&self) -> &str {
        match self.format {
            Format::Json => &self.records,
            Format::Jsonl | Format::Csv => "",
        }
    }
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
        #[serde(default)]
        size_param: Option<String>,
    },
    /// The next page's URL in the body (Zendesk `/links/next`, Salesforce
    /// `/nextRecordsUrl`, Microsoft Graph `/@odata.nextLink`): absolute or relative to the
    /// base URL, followed only on the source's origin. Absent, null or empty: last page.
    NextUrl {
        /// JSON pointer of the URL.
        pointer: String,
        /// Query parameter of the page size on the first request; absent: none is sent.
        #[serde(default)]
        size_param: Option<String>,
        /// JSON pointer of a has-more flag (Zendesk `/meta/has_more`): false ends the sync
        /// even when the page still carries a next URL.
        #[serde(default)]
        has_more: Option<String>,
        /// JSON pointer of an end flag (Zendesk's export `/end_of_stream`, Salesforce
        /// `/done`): true ends the sync even when the page still carries a next URL.
        #[serde(default)]
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
        #[serde(default)]
        has_more: Option<String>,
        /// JSON pointer of the total record count: the sync ends once that many were read.
        #[serde(default)]
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
        #[serde(default)]
        has_more: Option<String>,
        /// JSON pointer of the total record count: the sync ends once that many were read.
        #[serde(default)]
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

fn p_cursor() -> String {
    "cursor".into()
}
fn p_next_cursor() -> String {
    "/next_cursor".into()
}
fn p_limit() -> String {
    "limit".into()
}
fn p_page() -> String {
    "page".into()
}
fn p_per_page() -> String {
    "per_page".into()
}
fn p_offset() -> String {
    "offset".into()
}
fn p_starting_after() -> String {
    "starting_after".into()
}
fn p_has_more() -> String {
    "/has_more".into()
}

/// Incremental sync: ask only for records changed since the last sync, less a look-back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// Query parameter of the filter (`updated_since`); empty: not sent as a query parameter
    /// (use `{since}` in the body, path or headers instead).
    pub param: String,
    /// JSON pointer of the record's timestamp field the filter applies to (`/updated_at`).
    pub field: String,
    /// How the filter (`param`, `{since}`, `{until}`, `end_param`) is written: `rfc3339`
    /// (default), `epoch_s`, `epoch_ms` or a pattern.
    #[serde(default)]
    pub format: TimeFormat,
    /// How `field` is read; defaults to `format`. (HubSpot filters in epoch milliseconds and
    /// returns RFC 3339.)
    #[serde(default)]
    pub field_format: Option<TimeFormat>,
    /// Query parameter of the window's end, sent with the time the sync started (Stripe
    /// `created[lte]`): a bounded window, so records written during the sync wait for the
    /// next one. Absent: open-ended.
    #[serde(default)]
    pub end_param: Option<String>,
    /// Re-read this much before the high-water mark, to catch late and backdated writes.
    #[serde(default = "defaults::lookback", with = "humantime_serde")]
    pub lookback: Duration,
}

/// A stream's primary key: one JSON pointer, or several (a composite key), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKey(Vec<String>);

impl PrimaryKey {
    /// A key of these pointers (at least one).
    ///
    /// # Panics
    /// When `pointers` is empty.
    pub fn new(pointers: Vec<String>) -> Self {
        assert!(!pointers.is_empty(), "a primary key has a pointer");
        Self(pointers)
    }

    /// The first (for a single key: the only) pointer: what fetch pages by (`after` style) and
    /// recognises unchanged records by.
    pub fn first(&self) -> &str {
        &self.0[0]
    }

    /// Every pointer, in order.
    pub fn pointers(&self) -> &[String] {
        &self.0
    }

    /// Whether the key has several fields.
    pub fn is_composite(&self) -> bool {
        self.0.len() > 1
    }

    fn check(&self, field: &str, format: KeyFormat) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            return Err(invalid(field, "needs at least one JSON pointer"));
        }
        let mut leaves = std::collections::BTreeSet::new();
        for (i, p) in self.0.iter().enumerate() {
            let at = if self.is_composite() {
                format!("{field}[{i}]")
            } else {
                field.to_owned()
            };
            check_pointer(&at, p)?;
            if p.is_empty() {
                return Err(invalid(at, "must point inside the record"));
            }
            let leaf = p.rsplit('/').next().unwrap_or_default();
            if !leaves.insert(leaf) {
                return Err(invalid(
                    at,
                    format!(
                        "`{p}` ends in the same member name as another key field (`{leaf}`): key fields are named by it"
                    ),
                ));
            }
        }
        if self.is_composite() && format != KeyFormat::Avro {
            return Err(invalid(
                field,
                "a composite primary key needs key_format = \"avro\" (a string key holds one field)",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_composite() {
            write!(f, "[{}]", self.0.join(", "))
        } else {
            f.write_str(self.first())
        }
    }
}

impl<'de> Deserialize<'de> for PrimaryKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d) {
            Ok(Raw::One(p)) => Ok(Self(vec![p])),
            Ok(Raw::Many(ps)) => Ok(Self(ps)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a JSON pointer (\"/id\") or a list of them ([\"/customer_id\", \"/id\"])",
            )),
        }
    }
}

/// How a stream's valid and curated topics' keys are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// The primary key's text as UTF-8 bytes, no schema (default).
    #[default]
    String,
    /// A Confluent-framed Avro record holding the key field(s), registered under the topic's
    /// key subject.
    Avro,
}

/// What to do with records that do not match the registered schema.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Send them to the DLQ (default).
    #[default]
    Dlq,
    /// Add new fields as optional, register the new version if the registry accepts it as
    /// compatible, and go on; otherwise DLQ.
    Evolve,
}

impl Incremental {
    /// How the record's field is read.
    pub fn field_format(&self) -> &TimeFormat {
        self.field_format.as_ref().unwrap_or(&self.format)
    }
}

/// The placeholders of paths, query values, header values and bodies.
pub const PLACEHOLDERS: [&str; 5] = ["cursor", "since", "until", "page_size", "page"];

/// Checks that every `{...}` in `text` is a known placeholder.
fn check_placeholders(field: &str, text: &str) -> Result<(), ConfigError> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.is_empty()
            && !PLACEHOLDERS.contains(&name)
        {
            return Err(invalid(
                field,
                format!(
                    "unknown placeholder `{{{name}}}`; known: {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ),
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn check_json_placeholders(field: &str, v: &serde_json::Value) -> Result<(), ConfigError> {
    match v {
        serde_json::Value::String(s) => check_placeholders(field, s),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_json_placeholders(&format!("{field}[{i}]"), x)),
        serde_json::Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_json_placeholders(&format!("{field}.{k}"), x)),
        _ => Ok(()),
    }
}

fn check_headers(field: &str, h: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (k, v) in h {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(invalid(format!("{field}.{k}"), "not a valid header name"));
        }
        check_placeholders(&format!("{field}.{k}"), v)?;
    }
    Ok(())
}

impl StreamConfig {
    /// Checks request shaping: method, body, headers, placeholders, pagination pointers.
    fn validate_request(&self, sat: &str) -> Result<(), ConfigError> {
        check_headers(&format!("{sat}.headers"), &self.headers)?;
        if let Some(p) = &self.path {
            check_placeholders(&format!("{sat}.path"), p)?;
        }
        for (k, v) in &self.query {
            check_placeholders(&format!("{sat}.query.{k}"), v)?;
        }
        match (&self.body, self.method) {
            (Some(_), Method::Get) => {
                return Err(invalid(
                    format!("{sat}.body"),
                    "a body needs method = \"POST\"",
                ));
            }
            (Some(Body::Json(v)), _) => check_json_placeholders(&format!("{sat}.body.json"), v)?,
            (Some(Body::Form(f)), _) => {
                for (k, v) in f {
                    check_placeholders(&format!("{sat}.body.form.{k}"), v)?;
                }
            }
            (Some(Body::Graphql { variables, .. }), _) => {
                for (k, v) in variables {
                    check_json_placeholders(&format!("{sat}.body.graphql.variables.{k}"), v)?;
                }
            }
            (None, _) => {}
        }
        let pointers: Vec<(&str, &String)> = match &self.pagination {
            Pagination::Cursor { next_pointer, .. } => vec![("next_pointer", next_pointer)],
            Pagination::After {
                has_more_pointer, ..
            } => vec![("has_more_pointer", has_more_pointer)],
            Pagination::NextUrl {
                pointer,
                has_more,
                done,
                ..
            } => [
                ("pointer", Some(pointer)),
                ("has_more", has_more.as_ref()),
                ("done", done.as_ref()),
            ]
            .into_iter()
            .filter_map(|(n, p)| p.map(|p| (n, p)))
            .collect(),
            Pagination::Graphql {
                end_cursor,
                has_next_page,
            } => vec![("end_cursor", end_cursor), ("has_next_page", has_next_page)],
            Pagination::Page {
                has_more, total, ..
            }
            | Pagination::Offset {
                has_more, total, ..
            } => [("has_more", has_more), ("total", total)]
                .into_iter()
                .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
                .collect(),
            Pagination::Link { .. } => vec![],
        };
        for (name, p) in &pointers {
            check_pointer(&format!("{sat}.pagination.{name}"), p)?;
        }
        if self.format != Format::Json {
            let reads_body = pointers.first().map(|(n, _)| *n).or(match self.pagination {
                Pagination::Cursor { .. } | Pagination::After { .. } => Some("style"),
                Pagination::Graphql { .. } | Pagination::NextUrl { .. } => Some("style"),
                _ => None,
            });
            if let Some(name) = reads_body {
                return Err(invalid(
                    format!("{sat}.pagination.{name}"),
                    format!(
                        "reads the page's JSON body, which a `{}` answer does not have: use `link` (the default), `page` or `offset` (without `has_more` and `total`)",
                        self.format.as_str()
                    ),
                ));
            }
        }
        if matches!(self.pagination, Pagination::Graphql { .. }) && !self.mentions("{cursor}") {
            return Err(invalid(
                format!("{sat}.pagination"),
                "graphql pagination sends endCursor through `{cursor}`: put it in the body (e.g. a variable `after = \"{cursor}\"`)",
            ));
        }
        if let Some(inc) = &self.incremental
            && inc.param.is_empty()
            && !self.mentions("{since}")
        {
            return Err(invalid(
                format!("{sat}.incremental.param"),
                "empty, and `{since}` appears nowhere in the request: the filter would not be sent",
            ));
        }
        Ok(())
    }

    /// Whether `placeholder` appears anywhere in the stream's request (its source's headers
    /// aside).
    fn mentions(&self, placeholder: &str) -> bool {
        fn json(v: &serde_json::Value, p: &str) -> bool {
            match v {
                serde_json::Value::String(s) => s.contains(p),
                serde_json::Value::Array(a) => a.iter().any(|x| json(x, p)),
                serde_json::Value::Object(o) => o.values().any(|x| json(x, p)),
                _ => false,
            }
        }
        let body = match &self.body {
            Some(Body::Json(v)) => json(v, placeholder),
            Some(Body::Form(f)) => f.values().any(|v| v.contains(placeholder)),
            Some(Body::Graphql { variables, .. }) => {
                variables.values().any(|x| json(x, placeholder))
            }
            None => false,
        };
        body || self.query.values().any(|v| v.contains(placeholder))
            || self.headers.values().any(|v| v.contains(placeholder))
            || self
                .path
                .as_deref()
                .is_some_and(|p| p.contains(placeholder))
    }
}

impl SourceConfig {
    pub(crate) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        check_name(&format!("{at}.name"), &self.name)?;
        if let Some(url) = &self.base_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| invalid(format!("{at}.base_url"), format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!("{at}.base_url"), "must be http or https"));
            }
        } else if self.streams.iter().any(|s| s.path.is_some()) {
            return Err(invalid(
                format!("{at}.base_url"),
                "required when a stream has a path",
            ));
        }
        if let Some(Auth::Session(s)) = &self.auth {
            s.validate(&format!("{at}.auth"), self.base_url.as_deref())?;
        }
        if let Some(Auth::Oauth2(o)) = &self.auth {
            o.validate(&format!("{at}.auth"))?;
        }
        if let Some(q) = &self.quota {
            if q.requests == 0 {
                return Err(invalid(
                    format!("{at}.quota.requests"),
                    "must be at least 1",
                ));
            }
            if q.per.is_zero() {
                return Err(invalid(
                    format!("{at}.quota.per"),
                    "must be longer than zero",
                ));
            }
        }
        if let Some(w) = &self.webhook {
            w.check(&format!("{at}.webhook"))?;
        }
        check_headers(&format!("{at}.headers"), &self.headers)?;
        if let Some(Auth::ApiKeyQuery { param, .. }) = &self.auth
            && param.is_empty()
        {
            return Err(invalid(format!("{at}.auth.param"), "must not be empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let sat = format!("{at}.streams[{i}]");
            check_name(&format!("{sat}.name"), &s.name)?;
            if !seen.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("{sat}.name"),
                    format!("duplicate stream `{}`", s.name),
                ));
            }
            check_pointer(&format!("{sat}.records"), &s.records)?;
            s.primary_key
                .check(&format!("{sat}.primary_key"), s.key_format)?;
            if !(super::MIN_MESSAGE_BYTES..=super::MAX_MESSAGE_BYTES).contains(&s.max_message_bytes)
            {
                return Err(invalid(
                    format!("{sat}.max_message_bytes"),
                    format!(
                        "must be between {} and {} (8 MiB, what managed Kafka services allow)",
                        super::MIN_MESSAGE_BYTES,
                        super::MAX_MESSAGE_BYTES
                    ),
                ));
            }
            if let Some(v) = &s.version {
                check_pointer(&format!("{sat}.version"), v)?;
                if v.is_empty() {
                    return Err(invalid(
                        format!("{sat}.version"),
                        "must point inside the record (or be left out: the later fetch wins)",
                    ));
                }
            } else if s.version_format.is_some() {
                return Err(invalid(
                    format!("{sat}.version_format"),
                    "needs a `version` pointer",
                ));
            }
            s.validate_request(&sat)?;
            if let Some(inc) = &s.incremental {
                check_pointer(&format!("{sat}.incremental.field"), &inc.field)?;
            }
            if s.page_size == 0 || s.page_size > 10_000 {
                return Err(invalid(
                    format!("{sat}.page_size"),
                    "must be between 1 and 10000",
                ));
            }
            if s.pages_per_transaction == 0 {
                return Err(invalid(
                    format!("{sat}.pages_per_transaction"),
                    "must be at least 1",
                ));
            }
            if let Some(p) = &s.path
                && !p.starts_with('/')
            {
                return Err(invalid(format!("{sat}.path"), "must start with '/'"));
            }
            if s.detect_deletes && s.full_sync_every.is_none() && s.incremental.is_some() {
                return Err(invalid(
                    format!("{sat}.detect_deletes"),
                    "needs full syncs: set full_sync_every (or drop incremental, making every sync full)",
                ));
            }
        }
        Ok(())
    }

    /// The token id quota is owned by.
    pub fn token_id(&self) -> &str {
        self.quota
            .as_ref()
            .and_then(|q| q.token_id.as_deref())
            .unwrap_or(&self.name)
    }
}

pub(super) fn check_pointer(field: &str, p: &str) -> Result<(), ConfigError> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{p}` is not a JSON pointer (must be empty or start with '/')"),
        ))
    }
}
