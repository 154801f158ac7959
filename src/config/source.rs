//! Sources and streams: what to fetch, how to page, how to identify and order records.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::auth::Auth;
use super::request::{
    BackfillConfig, Body, ExportConfig, Format, Method, Pagination, QuotaHeaders, StatusRule,
};
use super::timefmt::TimeFormat;
use super::webhook::WebhookConfig;
use super::{ConfigError, check_name, defaults, invalid};

/// One upstream API (or push source) and its streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source name: part of topic names and keys (`<source>/<stream>`).
    pub name: String,
    /// Base URL every stream path is appended to (`https://api.example.com`).
    pub base_url: Option<String>,
    /// How requests authenticate. Absent: no auth.
    pub auth: Option<Auth>,
    /// The request quota of this source's token.
    pub quota: Option<QuotaConfig>,
    /// Per-request timeout.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of 5xx, timeouts and connection resets before a page is given up (backoff with
    /// full jitter between them).
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Webhook settings for `POST /v1/webhooks/<source>`. Absent: webhooks refused (404).
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
    pub quota_headers: Option<QuotaHeaders>,
    /// The streams of this source.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
}

/// The quota of one API token. All streams of the source share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Identity of the token for quota ownership (`intake.quota` key); sources sharing one
    /// token must use the same id. Defaults to the source name.
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
    pub version: Option<String>,
    /// How `version` is read: absent, an integer or an RFC 3339 string; `rfc3339`,
    /// `epoch_s`, `epoch_ms` (a number or a numeric string) or a pattern: a timestamp.
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
    pub body: Option<Body>,
    /// How pages follow each other.
    #[serde(default)]
    pub pagination: Pagination,
    /// Page size sent in the style's size parameter.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// Incremental sync by a timestamp filter. Absent: every sync is a full sync.
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
    /// An asynchronous export (bulk API): the stream's request asks for one, its state is
    /// polled until its files are ready, and each file lands, with the cursor, exactly once.
    pub export: Option<ExportConfig>,
    /// A child stream: its requests are made once per record of another stream of the source
    /// (the parent), whose key fills the placeholder `as` in the path, query, headers or body.
    /// The parent's worker fetches a parent's children when the parent is new or changed, with
    /// one cursor per parent key (see docs/CONFIG.md, "Parent–child streams").
    pub parent: Option<ParentConfig>,
    /// The first sync reads history in time windows, several at once (see docs/CONFIG.md,
    /// "Windowed backfill").
    pub backfill: Option<BackfillConfig>,
}

/// `parent = { stream, key, as }`: whose records a child stream's requests are made for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParentConfig {
    /// The parent stream (of the same source).
    pub stream: String,
    /// JSON pointer of the parent record's key (default: the parent's first primary-key field).
    pub key: Option<String>,
    /// The placeholder the key fills: `as = "repo"` fills `{repo}`.
    #[serde(rename = "as")]
    pub placeholder: String,
}

impl ParentConfig {
    /// The pointer of the parent's key in a parent record.
    pub fn key_in<'a>(&'a self, parent: &'a StreamConfig) -> &'a str {
        self.key.as_deref().unwrap_or(parent.primary_key.first())
    }
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
    pub field_format: Option<TimeFormat>,
    /// Query parameter of the window's end, sent with the time the sync started (Stripe
    /// `created[lte]`): a bounded window, so records written during the sync wait for the
    /// next one. Absent: open-ended.
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

/// Checks that every `{...}` in `text` is a known placeholder or `extra` (a child stream's
/// parent key).
fn check_placeholders_with(
    field: &str,
    text: &str,
    extra: Option<&str>,
) -> Result<(), ConfigError> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.is_empty()
            && !PLACEHOLDERS.contains(&name)
            && extra != Some(name)
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

fn check_json_placeholders(
    field: &str,
    v: &serde_json::Value,
    extra: Option<&str>,
) -> Result<(), ConfigError> {
    match v {
        serde_json::Value::String(s) => check_placeholders_with(field, s, extra),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_json_placeholders(&format!("{field}[{i}]"), x, extra)),
        serde_json::Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_json_placeholders(&format!("{field}.{k}"), x, extra)),
        _ => Ok(()),
    }
}

fn check_headers(field: &str, h: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    check_headers_with(field, h, None)
}

fn check_headers_with(
    field: &str,
    h: &BTreeMap<String, String>,
    extra: Option<&str>,
) -> Result<(), ConfigError> {
    for (k, v) in h {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(invalid(format!("{field}.{k}"), "not a valid header name"));
        }
        check_placeholders_with(&format!("{field}.{k}"), v, extra)?;
    }
    Ok(())
}

impl StreamConfig {
    /// Checks request shaping: method, body, headers, placeholders, pagination pointers.
    fn validate_request(&self, sat: &str) -> Result<(), ConfigError> {
        let extra = self.parent.as_ref().map(|p| p.placeholder.as_str());
        check_headers_with(&format!("{sat}.headers"), &self.headers, extra)?;
        if let Some(p) = &self.path {
            check_placeholders_with(&format!("{sat}.path"), p, extra)?;
        }
        for (k, v) in &self.query {
            check_placeholders_with(&format!("{sat}.query.{k}"), v, extra)?;
        }
        match (&self.body, self.method) {
            (Some(_), Method::Get) => {
                return Err(invalid(
                    format!("{sat}.body"),
                    "a body needs method = \"POST\"",
                ));
            }
            (Some(Body::Json(v)), _) => {
                check_json_placeholders(&format!("{sat}.body.json"), v, extra)?;
            }
            (Some(Body::Form(f)), _) => {
                for (k, v) in f {
                    check_placeholders_with(&format!("{sat}.body.form.{k}"), v, extra)?;
                }
            }
            (Some(Body::Graphql { variables, .. }), _) => {
                for (k, v) in variables {
                    check_json_placeholders(
                        &format!("{sat}.body.graphql.variables.{k}"),
                        v,
                        extra,
                    )?;
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
        self.check_parents(at)?;
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
            if let Some(ex) = &s.export {
                for (name, p) in [("id", &ex.id), ("state", &ex.state), ("files", &ex.files)] {
                    check_pointer(&format!("{sat}.export.{name}"), p)?;
                }
                if !ex.status_path.contains("{id}") {
                    return Err(invalid(
                        format!("{sat}.export.status_path"),
                        "must hold `{id}`, where the export's id goes",
                    ));
                }
                if ex.done.is_empty() || ex.poll_every.is_zero() {
                    return Err(invalid(
                        format!("{sat}.export"),
                        "needs at least one `done` state and a `poll_every` above zero",
                    ));
                }
            }
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
            if let Some(b) = &s.backfill {
                let at = format!("{sat}.backfill");
                let Some(inc) = &s.incremental else {
                    return Err(invalid(
                        at,
                        "needs `incremental`: each window is an incremental query",
                    ));
                };
                if inc.end_param.is_none() && !s.mentions("{until}") {
                    return Err(invalid(
                        at,
                        "needs an upper bound on each window: `incremental.end_param`, or `{until}` in the request",
                    ));
                }
                if b.start_time().is_none() {
                    return Err(invalid(
                        format!("{at}.start"),
                        format!("`{}` is not an RFC 3339 time", b.start),
                    ));
                }
                if b.step.is_zero() || !(1..=64).contains(&b.concurrency) {
                    return Err(invalid(
                        at,
                        "needs a step above zero and a concurrency between 1 and 64",
                    ));
                }
                if s.export.is_some() || s.parent.is_some() {
                    return Err(invalid(at, "not with `export` or `parent`"));
                }
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

    /// Parent–child streams: the parent is another stream of this source, chains end in a
    /// stream without a parent (no cycles), the key fills a placeholder the child's request
    /// uses, and a child has none of the settings that only a stream's own syncs have.
    fn check_parents(&self, at: &str) -> Result<(), ConfigError> {
        for (i, s) in self.streams.iter().enumerate() {
            let Some(p) = &s.parent else { continue };
            let sat = format!("{at}.streams[{i}].parent");
            let Some(parent) = self.stream(&p.stream) else {
                return Err(invalid(
                    format!("{sat}.stream"),
                    format!("no stream `{}` in this source", p.stream),
                ));
            };
            if let Some(k) = &p.key {
                check_pointer(&format!("{sat}.key"), k)?;
            }
            if parent.export.is_some() {
                return Err(invalid(
                    format!("{sat}.stream"),
                    "an export stream cannot be a parent (its files are read whole)",
                ));
            }
            if p.key
                .as_deref()
                .unwrap_or(parent.primary_key.first())
                .is_empty()
            {
                return Err(invalid(
                    format!("{sat}.key"),
                    "must point inside the parent record",
                ));
            }
            if p.placeholder.is_empty()
                || !p
                    .placeholder
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || ["cursor", "since", "until", "page_size", "page", "id"]
                    .contains(&p.placeholder.as_str())
            {
                return Err(invalid(
                    format!("{sat}.as"),
                    "must be a placeholder name of letters, digits and `_`, not one intake fills itself (cursor, since, until, page_size, page, id)",
                ));
            }
            if !s.mentions(&format!("{{{}}}", p.placeholder)) {
                return Err(invalid(
                    format!("{sat}.as"),
                    format!(
                        "`{{{}}}` appears nowhere in the stream's request: every parent would get the same children",
                        p.placeholder
                    ),
                ));
            }
            let own = [
                ("incremental", s.incremental.is_some()),
                ("export", s.export.is_some()),
                ("full_sync_every", s.full_sync_every.is_some()),
                ("detect_deletes", s.detect_deletes),
            ];
            if let Some((name, _)) = own.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    format!("{at}.streams[{i}].{name}"),
                    "a child stream reads all children of a new or changed parent and follows its parent's syncs; deletes are found by comparing a parent's children with the last time (leave this out)",
                ));
            }
            // A chain of parents ends within the number of streams, or it is a cycle.
            let mut up = p.stream.as_str();
            for _ in 0..=self.streams.len() {
                match self.stream(up).and_then(|x| x.parent.as_ref()) {
                    Some(pp) if pp.stream == s.name => {
                        return Err(invalid(
                            format!("{sat}.stream"),
                            format!("`{}` is its own ancestor", s.name),
                        ));
                    }
                    Some(pp) => up = &pp.stream,
                    None => break,
                }
            }
            if p.stream == s.name {
                return Err(invalid(
                    format!("{sat}.stream"),
                    "a stream cannot be its own parent",
                ));
            }
        }
        Ok(())
    }

    /// A stream of this source by name.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The streams whose parent is `name`.
    pub fn children_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a StreamConfig> + 'a {
        self.streams
            .iter()
            .filter(move |s| s.parent.as_ref().is_some_and(|p| p.stream == name))
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
