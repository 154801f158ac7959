//! Sources and streams: what to fetch, how to page, how to identify and order records.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

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
    /// OAuth 2.0: an access token from the provider's token endpoint, sent as
    /// `Authorization: Bearer`, refreshed before it expires (see `fetch::oauth`).
    Oauth2(OAuth2Config),
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

/// Webhook verification and keying for a push source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Signing secrets: one, or two during a rotation (both accepted).
    pub secrets: Vec<SecretRef>,
    /// Header that carries `t=<unix>,v1=<hex>`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// JSON pointer of the event id.
    #[serde(default = "default_event_id")]
    pub event_id: String,
    /// JSON pointer of the entity id (landing key).
    #[serde(default = "default_entity_id")]
    pub entity_id: String,
    /// JSON pointer of the per-entity sequence number (the version dedup orders by).
    #[serde(default = "default_seq")]
    pub sequence: String,
    /// JSON pointer of the stream name inside the event; absent: `stream` below.
    #[serde(default = "default_stream_pointer")]
    pub stream_pointer: String,
}

fn default_signature_header() -> String {
    "X-Intake-Signature".into()
}
fn default_event_id() -> String {
    "/event_id".into()
}
fn default_entity_id() -> String {
    "/entity_id".into()
}
fn default_seq() -> String {
    "/seq".into()
}
fn default_stream_pointer() -> String {
    "/stream".into()
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
    #[serde(default = "defaults::records_pointer")]
    pub records: String,
    /// JSON pointer of the primary key inside a record (`/id`).
    pub primary_key: String,
    /// JSON pointer of the version inside a record: an integer sequence, or an RFC 3339
    /// timestamp. Dedup keeps the highest; equal versions are broken by content hash.
    pub version: String,
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
    /// Pages per transaction (one cursor record each transaction).
    #[serde(default = "defaults::pages_per_transaction")]
    pub pages_per_transaction: u32,
}

/// Pagination styles.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
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
    #[default]
    Link,
    /// `page=N&per_page=M`, last page when fewer than M records come back.
    Page {
        /// Query parameter of the page number (1-based).
        #[serde(default = "p_page")]
        param: String,
        /// Query parameter of the page size.
        #[serde(default = "p_per_page")]
        size_param: String,
    },
    /// `offset=N&limit=M`.
    Offset {
        /// Query parameter of the offset.
        #[serde(default = "p_offset")]
        param: String,
        /// Query parameter of the page size.
        #[serde(default = "p_limit")]
        size_param: String,
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
    /// Query parameter of the filter (`updated_since`).
    pub param: String,
    /// JSON pointer of the record's timestamp field the filter applies to (`/updated_at`).
    pub field: String,
    /// Re-read this much before the high-water mark, to catch late and backdated writes.
    #[serde(default = "defaults::lookback", with = "humantime_serde")]
    pub lookback: Duration,
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
            if w.secrets.is_empty() || w.secrets.len() > 2 {
                return Err(invalid(
                    format!("{at}.webhook.secrets"),
                    "one secret, or two during a rotation",
                ));
            }
            for (f, p) in [
                ("event_id", &w.event_id),
                ("entity_id", &w.entity_id),
                ("sequence", &w.sequence),
            ] {
                check_pointer(&format!("{at}.webhook.{f}"), p)?;
            }
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
            check_pointer(&format!("{sat}.primary_key"), &s.primary_key)?;
            check_pointer(&format!("{sat}.version"), &s.version)?;
            if s.primary_key.is_empty() {
                return Err(invalid(
                    format!("{sat}.primary_key"),
                    "must point inside the record",
                ));
            }
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

fn check_pointer(field: &str, p: &str) -> Result<(), ConfigError> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{p}` is not a JSON pointer (must be empty or start with '/')"),
        ))
    }
}
