//! The knobs of `intake sim`: every one a flag with a documented default (most also read from
//! an `INTAKE_SIM_*` environment variable), checked once at start by [`SimArgs::validate`].

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::SimError;
use crate::config::SecretString;

/// A pagination style a list endpoint can speak.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Opaque token in the body (`next_cursor`, `null` at the end); request `?cursor=`.
    Cursor,
    /// `Link: <url>; rel="next"` header (absent at the end); the URL carries a cursor.
    Link,
    /// `?page=` (from 1) and `?per_page=`; the body reports `total` and `total_pages`.
    Page,
    /// `?offset=` (from 0) and `?limit=`; the body reports `total`.
    Offset,
    /// `?starting_after=<last id>`; the body reports `has_more`.
    After,
    /// The next page's absolute URL in the body (`links.next`, `null` at the end), as
    /// Zendesk's cursor pagination; the URL carries a cursor.
    NextUrl,
}

impl Style {
    /// Every style, in documentation order.
    pub const ALL: [Style; 6] = [
        Style::Cursor,
        Style::Link,
        Style::Page,
        Style::Offset,
        Style::After,
        Style::NextUrl,
    ];

    /// The name used in flags and in `/v1/styles/{style}/…`.
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Cursor => "cursor",
            Style::Link => "link",
            Style::Page => "page",
            Style::Offset => "offset",
            Style::After => "after",
            Style::NextUrl => "next_url",
        }
    }
}

impl FromStr for Style {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::data::named(Style::ALL, Style::as_str, s).ok_or_else(|| {
            format!("unknown pagination style '{s}'; styles: cursor, link, page, offset, after, next_url")
        })
    }
}

/// How a token's quota is enforced.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum QuotaMode {
    /// At most `limit` requests per window; windows are aligned to multiples of the window
    /// length since the unix epoch (so 1 s windows are exactly the unix seconds).
    Window,
    /// A token bucket holding at most `limit` requests (the burst), refilled at
    /// `limit / window` per second.
    Bucket,
}

/// A kind of schema drift the simulator can inject into a record.
#[derive(
    Copy,
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    Serialize,
    Deserialize,
)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// An enum value renamed: customers `status` (`active`→`enabled`, …), orders `status`
    /// (`paid`→`settled`, …), events `type` (`login`→`sign_in`, …).
    UnknownEnum,
    /// A new non-null field: customers `loyalty_tier`, orders `fulfillment_channel`, events
    /// `source`.
    UnknownField,
    /// A string field turned number (customers `email`, events `type`) or a number turned
    /// string (orders `amount_cents`).
    TypeMismatch,
    /// A required field removed: customers `email`, orders `currency`, events `entity_id`.
    MissingField,
}

impl DriftKind {
    /// Every kind, the default of `--drift-kinds`.
    pub const ALL: [DriftKind; 4] = [
        DriftKind::UnknownEnum,
        DriftKind::UnknownField,
        DriftKind::TypeMismatch,
        DriftKind::MissingField,
    ];

    /// The name used in flags, in the truth and in DLQ `dlq.error.kind` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::UnknownEnum => "unknown_enum",
            DriftKind::UnknownField => "unknown_field",
            DriftKind::TypeMismatch => "type_mismatch",
            DriftKind::MissingField => "missing_field",
        }
    }
}

/// An API token and its quota, written `NAME=LIMIT` (requests per `--quota-window`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The bearer token clients send.
    pub token: String,
    /// Requests allowed per quota window (the burst in bucket mode).
    pub limit: u32,
}

impl std::fmt::Debug for TokenSpec {
    // Simulator tokens are not secrets, but keep them out of debug output all the same, in
    // line with the rest of the crate.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSpec(<{} chars>={})", self.token.len(), self.limit)
    }
}

impl FromStr for TokenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (token, limit) = s
            .split_once('=')
            .ok_or_else(|| "a token is written NAME=LIMIT, e.g. demo=50".to_owned())?;
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err("a token name must be non-empty, without spaces or commas".to_owned());
        }
        let limit = limit
            .parse()
            .map_err(|_| format!("the limit of token in '{token}=…' is not a whole number"))?;
        Ok(Self {
            token: token.to_owned(),
            limit,
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

fn parse_secret(s: &str) -> Result<SecretString, &'static str> {
    if s.is_empty() {
        return Err("a signing secret must not be empty");
    }
    Ok(SecretString::new(s))
}

/// A `Content-Encoding` the simulator can answer with (`--compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib).
    Deflate,
}

/// Flags of `intake sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address `intake sim` listens on (tests pass their own listener instead).
    #[arg(long, env = "INTAKE_SIM_LISTEN", default_value = "127.0.0.1:8900")]
    pub listen: SocketAddr,

    /// Seed of the data set, the writer, faults and webhook shuffling: the same seed gives
    /// byte-identical pages.
    #[arg(long, env = "INTAKE_SIM_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Records generated per stream (customers, orders, events) at start.
    #[arg(long, env = "INTAKE_SIM_RECORDS", default_value_t = 1000)]
    pub records: u32,

    /// Days (1..=3650) the initial records' creation times spread over from 2024-01-01:
    /// record n is created about n × (span / records) in, with that spacing at most 10
    /// minutes (so a small data set covers less than the span: records × 10 minutes). The
    /// default, 180, gives the same data set as before the flag existed. 1 000 000 records
    /// over 1095 days lie ~94.6 s apart. Updated versions lie up to 30 days after creation.
    #[arg(long, env = "INTAKE_SIM_SPAN_DAYS", default_value_t = 180)]
    pub span_days: u32,

    /// Like HubSpot's search (10 000), a list query (one `updated_since`/`updated_before`
    /// pair) can be read only up to its first N records on `/v1/{stream}` and
    /// `/v1/styles/…`: a page starting at or past N is a 400 `result_cap` (counted as
    /// `result_cap_refusals` in `/admin/stats`), a page running past N is cut at N and still
    /// says more follow. 0: no cap.
    #[arg(long, env = "INTAKE_SIM_RESULT_CAP", default_value_t = 0)]
    pub result_cap: usize,

    /// Page size when the request gives none.
    #[arg(long, env = "INTAKE_SIM_PAGE_SIZE", default_value_t = 100)]
    pub page_size: u32,

    /// Largest page size a request may ask for; more is a 400.
    #[arg(long, env = "INTAKE_SIM_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: u32,

    /// Pagination style of `GET /v1/customers`.
    #[arg(
        long,
        value_enum,
        env = "INTAKE_SIM_CUSTOMERS_PAGINATION",
        default_value = "cursor"
    )]
    pub customers_pagination: Style,

    /// Pagination style of `GET /v1/orders`.
    #[arg(
        long,
        value_enum,
        env = "INTAKE_SIM_ORDERS_PAGINATION",
        default_value = "link"
    )]
    pub orders_pagination: Style,

    /// Pagination style of `GET /v1/events`.
    #[arg(
        long,
        value_enum,
        env = "INTAKE_SIM_EVENTS_PAGINATION",
        default_value = "after"
    )]
    pub events_pagination: Style,

    /// Background writes per second; each picks one of the three streams at random and
    /// creates, updates or deletes a customer or order, or appends an event. 0: no writer.
    #[arg(long, env = "INTAKE_SIM_WRITE_RATE", default_value_t = 1.0)]
    pub write_rate: f64,

    /// Start with the writer paused (`POST /admin/resume` starts it).
    #[arg(long, env = "INTAKE_SIM_START_PAUSED")]
    pub start_paused: bool,

    /// Fraction of customer/order writes that create a record.
    #[arg(long, env = "INTAKE_SIM_CREATE_SHARE", default_value_t = 0.2)]
    pub create_share: f64,

    /// Fraction of customer/order writes that delete a record (the rest update one).
    #[arg(long, env = "INTAKE_SIM_DELETE_SHARE", default_value_t = 0.1)]
    pub delete_share: f64,

    /// Fraction of updates that are backdated: `updated_at` is set in the past while
    /// `version` still increments, so `updated_since=<last sync>` misses them.
    #[arg(long, env = "INTAKE_SIM_BACKDATE_RATE", default_value_t = 0.1)]
    pub backdate_rate: f64,

    /// Least age of a backdated `updated_at`.
    #[arg(long, env = "INTAKE_SIM_BACKDATE_MIN", default_value = "1h", value_parser = parse_duration)]
    pub backdate_min: Duration,

    /// Greatest age of a backdated `updated_at`.
    #[arg(long, env = "INTAKE_SIM_BACKDATE_MAX", default_value = "3d", value_parser = parse_duration)]
    pub backdate_max: Duration,

    /// API token and its quota, NAME=LIMIT requests per `--quota-window`; repeat the flag
    /// (or comma-separate in the variable) for several tokens.
    #[arg(
        long = "token",
        env = "INTAKE_SIM_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        default_value = "demo=100"
    )]
    pub tokens: Vec<TokenSpec>,

    /// Accept only access tokens signed by this OpenID Connect issuer (a JWT checked against
    /// the issuer's JWKS: signature, `iss`, `exp`) instead of the `--token` names, e.g.
    /// `http://127.0.0.1:8180/realms/intake`.
    #[arg(long, env = "INTAKE_SIM_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// Take session tokens from `POST /v1/login` (`{"username", "password"}`, these
    /// credentials) instead of the `--token` names; they count against the first `--token`'s
    /// quota, and `POST /admin/sessions/expire` ends them all (see `sim::session`).
    #[arg(long, env = "INTAKE_SIM_SESSION_LOGIN", hide_env_values = true)]
    pub session_login: Option<String>,

    /// With `--session-login`: a session ends after this many requests (0: never).
    #[arg(long, env = "INTAKE_SIM_SESSION_MAX_REQUESTS", default_value_t = 0)]
    pub session_max_requests: u64,

    /// With `--oidc-issuer`: the `--token` whose quota accepted tokens count against
    /// (default: the first `--token`).
    #[arg(long, env = "INTAKE_SIM_OIDC_QUOTA_TOKEN")]
    pub oidc_quota_token: Option<String>,

    /// Length of a quota window (the refill period of the bucket in bucket mode).
    #[arg(long, env = "INTAKE_SIM_QUOTA_WINDOW", default_value = "1s", value_parser = parse_duration)]
    pub quota_window: Duration,

    /// Quota enforcement: a fixed window, or a token bucket with burst = limit.
    #[arg(
        long,
        value_enum,
        env = "INTAKE_SIM_QUOTA_MODE",
        default_value = "window"
    )]
    pub quota_mode: QuotaMode,

    /// How far back `GET /admin/stats` keeps the per-second request histogram.
    #[arg(long, env = "INTAKE_SIM_STATS_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub stats_retention: Duration,

    /// Fraction of record ids whose records drift from the schema (decided per id from the
    /// seed, so a drifted id stays drifted across updates).
    #[arg(long, env = "INTAKE_SIM_DRIFT_RATE", default_value_t = 0.0)]
    pub drift_rate: f64,

    /// Kinds of drift to inject, comma-separated; a drifted id gets one of them.
    #[arg(
        long,
        value_enum,
        env = "INTAKE_SIM_DRIFT_KINDS",
        value_delimiter = ',',
        default_value = "unknown_enum,unknown_field,type_mismatch,missing_field"
    )]
    pub drift_kinds: Vec<DriftKind>,

    /// Fraction of record ids that carry a `notes` field of `--large-bytes` (decided per id).
    #[arg(long, env = "INTAKE_SIM_LARGE_RATE", default_value_t = 0.0)]
    pub large_rate: f64,

    /// Size in bytes of the `notes` field of large records (over 1 MiB by default); several
    /// sizes separated by commas: each large id takes one of them (decided per id).
    #[arg(
        long,
        env = "INTAKE_SIM_LARGE_BYTES",
        value_delimiter = ',',
        default_value = "1200000"
    )]
    pub large_bytes: Vec<u32>,

    /// Answer the list APIs compressed with this encoding when the request accepts it
    /// (`Accept-Encoding`), as most SaaS APIs do; `GET /admin/stats` counts the compressed
    /// answers (`compressed`).
    #[arg(long, value_enum, env = "INTAKE_SIM_COMPRESS")]
    pub compress: Option<Compression>,

    /// Looks at a new export's state (`GET /v1/exports/{id}`) that still find it running.
    #[arg(long, env = "INTAKE_SIM_EXPORT_POLLS", default_value_t = 2)]
    pub export_polls: u32,

    /// Records per file of an export.
    #[arg(long, env = "INTAKE_SIM_EXPORT_FILE_RECORDS", default_value_t = 50_000)]
    pub export_file_records: usize,

    /// Fraction of list responses whose body is cut short (invalid JSON, status 200).
    #[arg(long, env = "INTAKE_SIM_MALFORMED_RATE", default_value_t = 0.0)]
    pub malformed_rate: f64,

    /// Probability that a request starts a burst of 5xx answers.
    #[arg(long, env = "INTAKE_SIM_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Consecutive requests answered 5xx in one burst.
    #[arg(long, env = "INTAKE_SIM_ERROR_BURST", default_value_t = 3)]
    pub error_burst: u32,

    /// Fraction of requests answered only after `--slow-ms`.
    #[arg(long, env = "INTAKE_SIM_SLOW_RATE", default_value_t = 0.0)]
    pub slow_rate: f64,

    /// Delay of a slow response, in milliseconds.
    #[arg(long, env = "INTAKE_SIM_SLOW_MS", default_value_t = 2000)]
    pub slow_ms: u64,

    /// Fraction of requests whose connection is reset without any response.
    #[arg(long, env = "INTAKE_SIM_RESET_RATE", default_value_t = 0.0)]
    pub reset_rate: f64,

    /// URL every customer/order write is POSTed to as a signed webhook event; none, no
    /// webhooks.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_URL")]
    pub webhook_url: Option<url::Url>,

    /// Secret signing webhook deliveries (HMAC-SHA256, `X-Intake-Signature`); give two
    /// (repeat the flag or comma-separate) to sign with both during a rotation. Never logged.
    #[arg(
        long = "webhook-secret",
        env = "INTAKE_SIM_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = parse_secret
    )]
    pub webhook_secrets: Vec<SecretString>,

    /// Webhook events are delivered in random order within a window of this many.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_SHUFFLE_WINDOW", default_value_t = 8)]
    pub webhook_shuffle_window: u32,

    /// Fraction of webhook events delivered twice (same event id and body).
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_DUP_RATE", default_value_t = 0.0)]
    pub webhook_dup_rate: f64,

    /// Delivery attempts of one event before it is dropped (counted in stats).
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,

    /// First retry delay of a failed delivery; doubles per attempt, with full jitter.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_RETRY_BASE", default_value = "100ms", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,

    /// Largest retry delay of a failed delivery.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_RETRY_MAX", default_value = "5s", value_parser = parse_duration)]
    pub webhook_retry_max: Duration,

    /// How long an event may wait for its shuffle window to fill before it is sent anyway.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_LINGER", default_value = "50ms", value_parser = parse_duration)]
    pub webhook_linger: Duration,

    /// Timeout of one delivery attempt.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Webhook events held at most (queued, shuffling or awaiting retry); writes wait for
    /// room beyond it.
    #[arg(long, env = "INTAKE_SIM_WEBHOOK_MAX_PENDING", default_value_t = 10_000)]
    pub webhook_max_pending: u32,

    /// The GitHub-shaped mode (`--github-*`, see `sim::github`).
    #[command(flatten)]
    pub github: super::github::GithubArgs,

    /// The parent–child mode: repositories → issues → comments (`--tree-*`, see `sim::tree`).
    #[command(flatten)]
    pub tree: super::tree::TreeArgs,

    /// Also serve the pages of a fixture directory written by `intake fixtures export`
    /// (repeat the flag for several): a request whose path and query match a page's request
    /// gets its body, behind the same auth, quota and faults as `/v1` (see `sim::fixtures`);
    /// `GET /admin/fixtures/stats` counts what each served.
    #[arg(
        long = "fixtures",
        value_name = "DIR",
        env = "INTAKE_SIM_FIXTURES",
        value_delimiter = ','
    )]
    pub fixtures: Vec<std::path::PathBuf>,
}

fn check_fraction(field: &'static str, value: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SimError::config(
            field,
            format!("must lie in 0..=1, got {value}"),
        ))
    }
}

impl SimArgs {
    /// Parses flags as the `intake sim` command line would (the first item is the program
    /// name); for tests and embedders.
    ///
    /// # Errors
    ///
    /// The clap error of a bad flag.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: SimArgs,
        }
        <Wrapper as clap::Parser>::try_parse_from(args).map(|w| w.args)
    }

    /// Checks cross-field rules that clap cannot; names the offending flag.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] naming the first bad flag.
    pub fn validate(&self) -> Result<(), SimError> {
        for (field, value) in [
            ("--create-share", self.create_share),
            ("--delete-share", self.delete_share),
            ("--backdate-rate", self.backdate_rate),
            ("--drift-rate", self.drift_rate),
            ("--large-rate", self.large_rate),
            ("--malformed-rate", self.malformed_rate),
            ("--error-rate", self.error_rate),
            ("--slow-rate", self.slow_rate),
            ("--reset-rate", self.reset_rate),
            ("--webhook-dup-rate", self.webhook_dup_rate),
        ] {
            check_fraction(field, value)?;
        }
        if self.create_share + self.delete_share > 1.0 {
            return Err(SimError::config(
                "--delete-share",
                "--create-share plus --delete-share must not exceed 1",
            ));
        }
        if !(self.write_rate.is_finite() && self.write_rate >= 0.0) {
            return Err(SimError::config("--write-rate", "must be a number >= 0"));
        }
        if !(1..=3650).contains(&self.span_days) {
            return Err(SimError::config(
                "--span-days",
                format!("must lie in 1..=3650, got {}", self.span_days),
            ));
        }
        if self.page_size == 0 || self.page_size > self.max_page_size {
            return Err(SimError::config(
                "--page-size",
                format!("must lie in 1..=--max-page-size ({})", self.max_page_size),
            ));
        }
        if self.backdate_min > self.backdate_max {
            return Err(SimError::config(
                "--backdate-min",
                "must not exceed --backdate-max",
            ));
        }
        if self.quota_window < Duration::from_millis(1) {
            return Err(SimError::config("--quota-window", "must be at least 1ms"));
        }
        if self.tokens.is_empty() {
            return Err(SimError::config("--token", "give at least one NAME=LIMIT"));
        }
        if let Some(i) = &self.oidc_issuer
            && !(i.starts_with("http://") || i.starts_with("https://"))
        {
            return Err(SimError::config("--oidc-issuer", "must be an http(s) URL"));
        }
        if let Some(t) = &self.oidc_quota_token
            && !self.tokens.iter().any(|x| &x.token == t)
        {
            return Err(SimError::config(
                "--oidc-quota-token",
                "must name one of the --token names",
            ));
        }
        if self.drift_rate > 0.0 && self.drift_kinds.is_empty() {
            return Err(SimError::config(
                "--drift-kinds",
                "a drift rate above 0 needs at least one kind",
            ));
        }
        for dir in &self.fixtures {
            if let Err(e) = crate::fixtures::Manifest::read(dir) {
                return Err(SimError::config("--fixtures", format!("{e:#}")));
            }
        }
        if self.error_burst == 0 {
            return Err(SimError::config("--error-burst", "must be at least 1"));
        }
        if self.webhook_url.is_some() && self.webhook_secrets.is_empty() {
            return Err(SimError::config(
                "--webhook-secret",
                "webhooks need a signing secret",
            ));
        }
        if self.webhook_shuffle_window == 0 {
            return Err(SimError::config(
                "--webhook-shuffle-window",
                "must be at least 1",
            ));
        }
        if self.webhook_max_attempts == 0 {
            return Err(SimError::config(
                "--webhook-max-attempts",
                "must be at least 1",
            ));
        }
        if self.webhook_max_pending < self.webhook_shuffle_window.max(2) {
            return Err(SimError::config(
                "--webhook-max-pending",
                "must be at least the shuffle window (and 2)",
            ));
        }
        self.github.validate()?;
        self.tree.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let args = SimArgs::try_parse_from(["sim"]).unwrap();
        args.validate().unwrap();
        assert_eq!(args.seed, 42);
        assert_eq!(args.records, 1000);
        assert_eq!((args.span_days, args.result_cap), (180, 0));
        assert_eq!(args.customers_pagination, Style::Cursor);
        assert_eq!(args.orders_pagination, Style::Link);
        assert_eq!(args.events_pagination, Style::After);
        assert_eq!(args.quota_mode, QuotaMode::Window);
        assert_eq!(args.quota_window, Duration::from_secs(1));
        assert_eq!(args.backdate_max, Duration::from_secs(3 * 86_400));
        assert_eq!(args.drift_kinds, DriftKind::ALL.to_vec());
        assert_eq!(
            (args.tree.repos, args.tree.issues, args.tree.comments),
            (0, 10, 3)
        );
        assert_eq!(
            args.tokens,
            vec![TokenSpec {
                token: "demo".into(),
                limit: 100
            }]
        );
    }

    #[test]
    fn repeated_tokens_and_kinds() {
        let args = SimArgs::try_parse_from([
            "sim",
            "--token",
            "a=5",
            "--token",
            "b=7",
            "--drift-kinds",
            "unknown_enum,missing_field",
            "--webhook-secret",
            "old,new",
        ])
        .unwrap();
        assert_eq!(args.tokens.len(), 2);
        assert_eq!(args.tokens[1].limit, 7);
        assert_eq!(
            args.drift_kinds,
            vec![DriftKind::UnknownEnum, DriftKind::MissingField]
        );
        assert_eq!(args.webhook_secrets.len(), 2);
        assert!(!format!("{args:?}").contains("old"));
    }

    #[test]
    fn bad_values_name_their_flag() {
        let refused: [(&[&str], &str); 6] = [
            (&["--drift-rate", "1.5"], "--drift-rate"),
            (
                &["--create-share", "0.6", "--delete-share", "0.5"],
                "--delete-share",
            ),
            (&["--webhook-url", "http://x/"], "--webhook-secret"),
            (
                &["--tree-repos", "1000000", "--tree-issues", "100"],
                "--tree-repos",
            ),
            (&["--span-days", "0"], "--span-days"),
            (&["--span-days", "3651"], "--span-days"),
        ];
        for (flags, named) in refused {
            let args = SimArgs::try_parse_from(["sim"].iter().chain(flags)).unwrap();
            let error = args.validate().unwrap_err().to_string();
            assert!(error.contains(named), "{flags:?}: {error}");
        }
        let args = SimArgs::try_parse_from(["sim", "--span-days", "1095", "--result-cap", "10000"])
            .unwrap();
        args.validate().unwrap();
        assert_eq!((args.span_days, args.result_cap), (1095, 10_000));
        assert!(SimArgs::try_parse_from(["sim", "--token", "nolimit"]).is_err());
        assert!(SimArgs::try_parse_from(["sim", "--customers-pagination", "pages"]).is_err());
    }
}
