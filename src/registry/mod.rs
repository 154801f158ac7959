//! The schema registry (Confluent API; Apicurio's `/apis/ccompat/v7` locally).
//!
//! Lookups go through `schema_registry_converter` and are cached: schemas by id forever (ids
//! are immutable), the latest version of a subject for `registry.cache_ttl`, so a newly
//! registered version is picked up without a restart. [`apply_schemas`] registers the schemas
//! kept as code in `topics/schemas/<source>/<stream>.avsc` (`intake schema apply`).
//!
//! `registry.auth` is applied to every request: basic, bearer, a header key, or OAuth 2.0
//! client credentials — bearer tokens from the same token client sources use
//! ([`crate::fetch::oauth::OAuth2`]: fetched on first use, refreshed `refresh_margin` before
//! they expire, dropped when the registry answers 401 so the next request fetches a new one).

pub mod wire;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use dashmap::DashMap;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, get_schema_by_subject, is_compatible_schema, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::config::{Auth, Config, KeyFormat, RegistryConfig, SecretString, SubjectStrategy};
use crate::fetch::http::ResolvedAuth;
use crate::fetch::oauth::{AuthError, OAuth2};
use crate::topics::TopicNames;

/// A registry failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The subject has no registered version.
    #[error("no schema registered for subject {0}")]
    NotFound(String),
    /// The registry refused a new version as incompatible with the existing ones.
    #[error("schema for {subject} is not compatible with its latest version ({detail})")]
    Incompatible {
        /// Subject.
        subject: String,
        /// What the registry said.
        detail: String,
    },
    /// The schema text is not valid Avro.
    #[error("invalid Avro schema for {subject}: {detail}")]
    InvalidSchema {
        /// Subject.
        subject: String,
        /// Parser message.
        detail: String,
    },
    /// The registry could not be reached or answered an error: retry later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused our credentials or its certificate is not trusted: a setting is
    /// wrong, retrying does not help.
    #[error("schema registry at {url}: check `{field}`: {reason}")]
    Misconfigured {
        /// `registry.url`.
        url: String,
        /// The setting to look at.
        field: String,
        /// What happened.
        reason: String,
    },
}

impl RegistryError {
    /// Whether retrying later may help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, RegistryError::Unavailable(_))
    }
}

/// The latest registered version of a subject.
#[derive(Debug)]
pub struct Latest {
    /// Global schema id (goes into the wire format).
    pub id: u32,
    /// Version within the subject.
    pub version: u32,
    /// Parsed schema.
    pub schema: Arc<Schema>,
    /// Schema text as registered.
    pub text: String,
}

/// A registered schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Global id.
    pub id: u32,
    /// Version within the subject.
    pub version: u32,
}

/// Cached access to the registry.
pub struct Registry {
    /// The converter's settings (static credentials, or the current OAuth 2.0 token).
    settings: std::sync::Mutex<SrSettings>,
    base: String,
    http: reqwest::Client,
    /// `registry.auth`, secrets resolved; applied to the requests made without the converter.
    auth: Option<ResolvedAuth>,
    /// `registry.auth` with `kind = "oauth2"`: the token client and what the converter's
    /// settings are rebuilt from when its token changes.
    oauth: Option<OAuth>,
    ttl: Duration,
    by_id: DashMap<u32, Arc<Schema>>,
    latest: DashMap<String, (Instant, Arc<Latest>)>,
}

/// OAuth 2.0 client credentials for the registry.
struct OAuth {
    client: OAuth2,
    /// The token the current converter settings carry.
    current: std::sync::Mutex<Option<SecretString>>,
    /// The registry's URL and TLS settings, for new converter settings.
    url: String,
    tls: Option<crate::config::RegistryTls>,
}

impl OAuth {
    /// Converter settings that send `token`. The CA file is read again for each new token
    /// (minutes apart), so a renewed one is picked up too.
    fn settings(&self, token: &SecretString) -> Result<SrSettings, RegistryError> {
        let mut b = SrSettings::new_builder(self.url.clone());
        b.set_timeout(Duration::from_secs(10))
            .no_proxy()
            .set_token_authorization(token.expose());
        b.build_with(client_builder(&self.url, self.tls.as_ref())?)
            .map_err(|e| RegistryError::Unavailable(e.to_string()))
    }
}

/// An HTTP client for the registry at `url`: its timeout, no proxy, and `registry.tls`'s CA
/// added to the roots.
fn client_builder(
    url: &str,
    tls: Option<&crate::config::RegistryTls>,
) -> Result<reqwest::ClientBuilder, RegistryError> {
    let misconfigured = |reason: String| RegistryError::Misconfigured {
        url: url.to_owned(),
        field: "registry.tls.ca_file".to_owned(),
        reason,
    };
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy();
    if let Some(tls) = tls {
        let pem = std::fs::read(&tls.ca_file)
            .map_err(|e| misconfigured(format!("cannot read {}: {e}", tls.ca_file.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            misconfigured(format!(
                "{} holds no PEM certificate: {e}",
                tls.ca_file.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(misconfigured(format!(
                "{} holds no PEM certificate",
                tls.ca_file.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.base)
            .finish_non_exhaustive()
    }
}

fn sr_err(subject: &str, e: SRCError) -> RegistryError {
    let text = format!("{} {}", e.error, e.cause.clone().unwrap_or_default());
    classify_sr(subject, e.retriable, &e.error, text)
}

/// What a registry error means, by the HTTP status the client reports (`… failed with status
/// 404 Not Found`), never by digits that happen to appear elsewhere in the text: the request
/// URL carries the subject, and a random topic prefix holding `404` once made an unreachable
/// registry look like a missing schema (records went to the DLQ instead of being retried).
fn classify_sr(subject: &str, retriable: bool, error: &str, text: String) -> RegistryError {
    let status = error
        .split_once("with status ")
        .and_then(|(_, rest)| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        _ if retriable => RegistryError::Unavailable(text),
        Some(404) => RegistryError::NotFound(subject.to_owned()),
        Some(409) => RegistryError::Incompatible {
            subject: subject.to_owned(),
            detail: text,
        },
        Some(422) => RegistryError::InvalidSchema {
            subject: subject.to_owned(),
            detail: text,
        },
        _ => RegistryError::Unavailable(text),
    }
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    #[test]
    fn downstream_subjects_follow_confluents_strategies() {
        let record = r#"{"type":"record","name":"Order","namespace":"intake.sim","fields":[{"name":"id","type":"string"}]}"#;
        let topic = "intake.sim.orders";
        let name = |s| downstream_subject(s, topic, record).unwrap();
        assert_eq!(name(SubjectStrategy::Topic), "intake.sim.orders-value");
        assert_eq!(name(SubjectStrategy::Record), "intake.sim.Order");
        assert_eq!(
            name(SubjectStrategy::TopicRecord),
            "intake.sim.orders-intake.sim.Order"
        );
        // The topic strategy needs no record name; the others refuse a schema without one.
        assert_eq!(
            downstream_subject(SubjectStrategy::Topic, topic, r#""string""#).unwrap(),
            "intake.sim.orders-value"
        );
        assert!(downstream_subject(SubjectStrategy::Record, topic, r#""string""#).is_err());
    }

    #[test]
    fn key_subjects_follow_the_strategy_for_the_curated_topic() {
        let key = r#"{"type":"record","name":"OrderKey","namespace":"intake.sim","fields":[{"name":"id","type":"string"}]}"#;
        let (valid, topic) = ("intake.sim.orders.valid", "intake.sim.orders");
        let names = |s| key_subjects(s, valid, topic, key).unwrap();
        assert_eq!(
            names(SubjectStrategy::Topic),
            ["intake.sim.orders.valid-key", "intake.sim.orders-key"]
        );
        assert_eq!(
            names(SubjectStrategy::Record),
            ["intake.sim.orders.valid-key", "intake.sim.OrderKey"]
        );
        assert_eq!(
            names(SubjectStrategy::TopicRecord),
            [
                "intake.sim.orders.valid-key",
                "intake.sim.orders-intake.sim.OrderKey"
            ]
        );
    }

    #[test]
    fn registry_errors_are_classified_by_status_only() {
        let c = |retriable, error: &str| {
            classify_sr("s404-value", retriable, error, format!("{error} t404abc"))
        };
        // An unreachable registry, with 404 in the URL's subject: retried, not "no schema".
        assert!(matches!(
            c(true, "http call to schema registry failed"),
            RegistryError::Unavailable(_)
        ));
        assert!(matches!(
            c(
                true,
                "HTTP request to schema registry failed with status 503 Service Unavailable"
            ),
            RegistryError::Unavailable(_)
        ));
        assert!(matches!(
            c(
                false,
                "HTTP request to schema registry failed with status 404 Not Found"
            ),
            RegistryError::NotFound(_)
        ));
        assert!(matches!(
            c(
                false,
                "HTTP request to schema registry failed with status 409 Conflict"
            ),
            RegistryError::Incompatible { .. }
        ));
        assert!(matches!(
            c(
                false,
                "HTTP request to schema registry failed with status 422 Unprocessable Entity"
            ),
            RegistryError::InvalidSchema { .. }
        ));
        assert!(matches!(
            c(false, "could not parse to RawRegisteredSchema"),
            RegistryError::Unavailable(_)
        ));
    }
}

impl Registry {
    /// A client for the configured registry.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: &RegistryConfig) -> Result<Self, RegistryError> {
        let misconfigured = |field: &str, reason: String| RegistryError::Misconfigured {
            url: cfg.url.clone(),
            field: field.to_owned(),
            reason,
        };
        let builder = || client_builder(&cfg.url, cfg.tls.as_ref());
        let secret_err = |e: crate::config::ConfigError| {
            let field = match &e {
                crate::config::ConfigError::Invalid { field, .. }
                | crate::config::ConfigError::Secret { field, .. } => field.clone(),
                _ => "registry.auth".to_owned(),
            };
            misconfigured(&field, e.to_string())
        };
        let (auth, oauth) = match &cfg.auth {
            Some(Auth::Oauth2(o)) => (
                None,
                Some(OAuth2::new(o, "registry", "registry.auth").map_err(secret_err)?),
            ),
            Some(a) => (
                Some(ResolvedAuth::resolve(a, "registry.auth").map_err(secret_err)?),
                None,
            ),
            None => (None, None),
        };
        let mut settings = SrSettings::new_builder(cfg.url.clone());
        settings.set_timeout(Duration::from_secs(10)).no_proxy();
        match &auth {
            None => {}
            Some(ResolvedAuth::Bearer(t)) => {
                settings.set_token_authorization(t.expose());
            }
            Some(ResolvedAuth::Basic(u, p)) => {
                settings.set_basic_authorization(u, Some(p.expose()));
            }
            Some(ResolvedAuth::ApiKey(h, k)) => {
                settings.add_header(h.as_str(), k.expose());
            }
            Some(ResolvedAuth::Query(..)) => {
                return Err(misconfigured(
                    "registry.auth.kind",
                    "api_key_query is for sources only: the registry client sends credentials in headers".to_owned(),
                ));
            }
        }
        let settings = settings
            .build_with(builder()?)
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let http = builder()?
            .build()
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let oauth = oauth.map(|client| OAuth {
            client,
            current: std::sync::Mutex::new(None),
            url: cfg.url.clone(),
            tls: cfg.tls.clone(),
        });
        Ok(Self {
            settings: std::sync::Mutex::new(settings),
            base: cfg.url.clone(),
            http,
            auth,
            oauth,
            ttl: cfg.cache_ttl,
            by_id: DashMap::new(),
            latest: DashMap::new(),
        })
    }

    /// The schema with a global id (cached forever: ids never change).
    ///
    /// # Errors
    /// Not found, unavailable, or not Avro.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.by_id.get(&id) {
            return Ok(s.clone());
        }
        let subject = format!("id {id}");
        let settings = self.settings().await?;
        let reg = match get_schema_by_id(id, &settings).await {
            Ok(r) => r,
            Err(e) => return Err(self.sr_err(&subject, e).await),
        };
        let schema =
            Arc::new(
                Schema::parse_str(&reg.schema).map_err(|e| RegistryError::InvalidSchema {
                    subject,
                    detail: e.to_string(),
                })?,
            );
        self.by_id.insert(id, schema.clone());
        Ok(schema)
    }

    /// The latest version of a subject, cached for the configured TTL.
    ///
    /// # Errors
    /// Not found, unavailable, or not Avro.
    pub async fn latest(&self, subject: &str) -> Result<Arc<Latest>, RegistryError> {
        if let Some(e) = self.latest.get(subject)
            && e.0.elapsed() < self.ttl
        {
            return Ok(e.1.clone());
        }
        let strategy = SubjectNameStrategy::TopicNameStrategy(
            subject.strip_suffix("-value").unwrap_or(subject).to_owned(),
            false,
        );
        let settings = self.settings().await?;
        let reg = match get_schema_by_subject(&settings, &strategy).await {
            Ok(r) => r,
            Err(e) => return Err(self.sr_err(subject, e).await),
        };
        let schema = match self.by_id.get(&reg.id) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Schema::parse_str(&reg.schema).map_err(|e| {
                    RegistryError::InvalidSchema {
                        subject: subject.to_owned(),
                        detail: e.to_string(),
                    }
                })?);
                self.by_id.insert(reg.id, s.clone());
                s
            }
        };
        let latest = Arc::new(Latest {
            id: reg.id,
            version: reg.version.unwrap_or(0),
            schema,
            text: reg.schema,
        });
        self.latest
            .insert(subject.to_owned(), (Instant::now(), latest.clone()));
        Ok(latest)
    }

    /// Forgets the cached latest version of a subject (after registering a new one).
    pub fn invalidate(&self, subject: &str) {
        self.latest.remove(subject);
    }

    /// Registers a schema under a subject (returns the existing id when identical).
    ///
    /// # Errors
    /// Incompatible, invalid, or unavailable.
    pub async fn register(&self, subject: &str, text: &str) -> Result<Registered, RegistryError> {
        Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema {
            subject: subject.to_owned(),
            detail: e.to_string(),
        })?;
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, text.to_owned());
        let settings = self.settings().await?;
        let reg = match post_schema(&settings, subject.to_owned(), supplied).await {
            Ok(r) => r,
            Err(e) => return Err(self.sr_err(subject, e).await),
        };
        self.invalidate(subject);
        let version = match reg.version {
            Some(v) => v,
            None => self.latest(subject).await.map(|l| l.version).unwrap_or(0),
        };
        Ok(Registered {
            id: reg.id,
            version,
        })
    }

    /// Whether the registry would accept `text` as the next version of `subject` under the
    /// subject's compatibility level. A subject with no versions accepts anything.
    ///
    /// # Errors
    /// Unavailable or invalid.
    pub async fn is_compatible(&self, subject: &str, text: &str) -> Result<bool, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, text.to_owned());
        let settings = self.settings().await?;
        match is_compatible_schema(&settings, subject.to_owned(), supplied).await {
            Ok(b) => Ok(b),
            Err(e) => match self.sr_err(subject, e).await {
                RegistryError::NotFound(_) => Ok(true),
                RegistryError::Incompatible { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Sets a subject's compatibility level (`BACKWARD`, `FULL`, `NONE`, ...).
    ///
    /// # Errors
    /// Unavailable.
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let url = format!("{}/config/{subject}", self.base);
        let resp = self
            .authorize(self.http.put(&url))
            .await?
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(RegistryError::Unavailable(format!(
                "PUT {url}: {status} {body}"
            )));
        }
        Ok(())
    }

    /// Whether the registry answers, with our credentials, over a trusted connection: a
    /// refused credential (401, 403) or an untrusted certificate is
    /// [`RegistryError::Misconfigured`] naming the setting; anything else that fails is
    /// [`RegistryError::Unavailable`].
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/subjects", self.base);
        let misconfigured = |field: &str, reason: String| RegistryError::Misconfigured {
            url: self.base.clone(),
            field: field.to_owned(),
            reason,
        };
        // A token endpoint that refuses the client names its setting already.
        let req = self.authorize(self.http.get(&url)).await?;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let chain = crate::fetch::http::describe(&e);
                let lower = chain.to_ascii_lowercase();
                if lower.contains("certificate") || lower.contains("unknownissuer") {
                    return Err(misconfigured("registry.tls.ca_file", chain));
                }
                return Err(RegistryError::Unavailable(format!("GET {url}: {chain}")));
            }
        };
        let status = resp.status();
        match status.as_u16() {
            s if (200..300).contains(&s) => Ok(()),
            401 => Err(misconfigured(
                match &self.auth {
                    // A token Keycloak (or any provider) issued that the registry refuses:
                    // the client's (its audience, its roles).
                    None if self.oauth.is_some() => "registry.auth.client_id",
                    None => "registry.auth",
                    Some(ResolvedAuth::Basic(..)) => "registry.auth.password",
                    Some(ResolvedAuth::Bearer(_)) => "registry.auth.token",
                    Some(ResolvedAuth::ApiKey(..) | ResolvedAuth::Query(..)) => "registry.auth.key",
                },
                format!("GET {url} answered {status}: the registry refused the credentials"),
            )),
            403 => Err(misconfigured(
                "registry.auth",
                format!("GET {url} answered {status}: these credentials may not read subjects"),
            )),
            _ => Err(RegistryError::Unavailable(format!("GET {url}: {status}"))),
        }
    }

    /// `req` with `registry.auth`'s credentials.
    async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        if let Some(o) = &self.oauth {
            let token = self.bearer(o).await?;
            return Ok(req.bearer_auth(token.expose()));
        }
        Ok(match &self.auth {
            None => req,
            Some(a) => a.apply(req),
        })
    }

    /// A valid OAuth 2.0 token (the cached one until `refresh_margin` before it expires).
    async fn bearer(&self, o: &OAuth) -> Result<SecretString, RegistryError> {
        o.client.bearer().await.map_err(|e| match e {
            AuthError::Rejected { ref error, .. } => RegistryError::Misconfigured {
                url: self.base.clone(),
                field: match error.as_str() {
                    "invalid_client" | "unauthorized_client" => "registry.auth.client_secret",
                    "invalid_scope" => "registry.auth.scope",
                    _ => "registry.auth",
                }
                .to_owned(),
                reason: e.to_string(),
            },
            other => RegistryError::Unavailable(other.to_string()),
        })
    }

    /// The converter's settings, with the current OAuth 2.0 token when there is one (new
    /// settings when the token changed).
    async fn settings(&self) -> Result<SrSettings, RegistryError> {
        let Some(o) = &self.oauth else {
            return Ok(self.lock_settings().clone());
        };
        let token = self.bearer(o).await?;
        let mut current = o.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref() != Some(&token) {
            *self.lock_settings() = o.settings(&token)?;
            *current = Some(token);
        }
        Ok(self.lock_settings().clone())
    }

    fn lock_settings(&self) -> std::sync::MutexGuard<'_, SrSettings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`sr_err`]; a 401 with an OAuth 2.0 token drops the token, so the next request (the
    /// error is retriable) fetches a new one.
    async fn sr_err(&self, subject: &str, e: SRCError) -> RegistryError {
        if let Some(o) = &self.oauth
            && e.error.contains("with status 401")
        {
            let sent = o.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(sent) = sent {
                o.client.rejected(&sent).await;
            }
        }
        sr_err(subject, e)
    }
}

/// What `intake schema apply` did for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaOutcome {
    /// The schema was already the latest version.
    Unchanged {
        /// Subject.
        subject: String,
        /// Its version.
        version: u32,
    },
    /// A new version was registered.
    Registered {
        /// Subject.
        subject: String,
        /// New version.
        version: u32,
        /// Global id.
        id: u32,
    },
    /// No schema file exists for a configured stream (its records will go to the DLQ as
    /// `no_schema` until one is registered).
    Missing {
        /// Subject.
        subject: String,
        /// Expected file.
        path: String,
    },
}

impl std::fmt::Display for SchemaOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaOutcome::Unchanged { subject, version } => {
                write!(f, "unchanged {subject} (version {version})")
            }
            SchemaOutcome::Registered {
                subject,
                version,
                id,
            } => {
                write!(f, "registered {subject} version {version} (id {id})")
            }
            SchemaOutcome::Missing { subject, path } => {
                write!(f, "warning: no schema file {path} for {subject}")
            }
        }
    }
}

/// Registers the schemas kept as code for every configured stream, with `BACKWARD`
/// compatibility on each subject: under validate's subject
/// (`<prefix>.<source>.<stream>.valid-value`) and under the curated topic's subject for
/// downstream tools ([`downstream_subject`]). Stops at the first incompatible change with an
/// error that names the subject and the registry's reason.
///
/// # Errors
/// Incompatible, invalid, or unavailable.
pub async fn apply_schemas(
    cfg: &Config,
    reg: &Registry,
) -> Result<Vec<SchemaOutcome>, RegistryError> {
    let names = TopicNames::from_config(cfg);
    let mut out = Vec::new();
    for s in &cfg.sources {
        for st in &s.streams {
            let path = schema_path(&cfg.registry.schema_dir, &s.name, &st.name);
            let Ok(text) = std::fs::read_to_string(&path) else {
                out.push(SchemaOutcome::Missing {
                    subject: names.subject(&s.name, &st.name),
                    path: path.display().to_string(),
                });
                continue;
            };
            out.extend(apply_stream(cfg, reg, &s.name, &st.name, &text).await?);
        }
    }
    Ok(out)
}

/// Registers one schema text for a stream under both of its subjects: validate's first, then
/// the curated topic's (so a schema downstream tools can see is always one validate uses).
///
/// # Errors
/// Incompatible, invalid, or unavailable.
pub async fn apply_stream(
    cfg: &Config,
    reg: &Registry,
    source: &str,
    stream: &str,
    text: &str,
) -> Result<Vec<SchemaOutcome>, RegistryError> {
    let names = TopicNames::from_config(cfg);
    let strategy = cfg.registry.subject_strategy;
    let subject = names.subject(source, stream);
    // With Avro keys, the key schema this value schema implies is checked first: a value
    // schema that would change the key is refused before anything is registered.
    let key = match cfg
        .source(source)
        .and_then(|s| s.streams.iter().find(|st| st.name == stream))
        .filter(|st| st.key_format == KeyFormat::Avro)
    {
        Some(st) => {
            let parsed = Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema {
                subject: subject.clone(),
                detail: e.to_string(),
            })?;
            let key_text =
                crate::validate::key::key_schema(&parsed, &st.primary_key).map_err(|detail| {
                    RegistryError::InvalidSchema {
                        subject: subject.clone(),
                        detail: format!("key_format = \"avro\": {detail}"),
                    }
                })?;
            let valid = names.valid(source, stream);
            let curated = names.curated(source, stream);
            key_unchanged(reg, strategy, &valid, &curated, &key_text).await?;
            Some((valid, curated, key_text))
        }
        None => None,
    };
    let first = apply_one(reg, &subject, text).await?;
    let downstream =
        downstream_subject(strategy, &names.curated(source, stream), text).map_err(|detail| {
            RegistryError::InvalidSchema {
                subject: subject.clone(),
                detail,
            }
        })?;
    let second = apply_one(reg, &downstream, text).await?;
    let mut out = vec![first, second];
    if let Some((valid, curated, key_text)) = key {
        let (_, outcomes) = apply_key(reg, strategy, &valid, &curated, &key_text).await?;
        out.extend(outcomes);
    }
    Ok(out)
}

/// The key subjects of a stream with `key_format = "avro"`: the valid topic's
/// (`<valid topic>-key`, which validate's consumers use, as its value subject is
/// `<valid topic>-value`) and the curated topic's for downstream tools, named by `strategy`
/// as Confluent's key serializers do (`<topic>-key`, the key record's full name, or
/// `<topic>-<full name>`).
///
/// # Errors
/// The key schema does not parse, or is not a named record where the strategy needs a name.
pub fn key_subjects(
    strategy: SubjectStrategy,
    valid_topic: &str,
    curated_topic: &str,
    key_schema: &str,
) -> Result<[String; 2], String> {
    Ok([
        format!("{valid_topic}-key"),
        named_subject(strategy, curated_topic, key_schema, "key")?,
    ])
}

/// Checks that neither key subject of a stream holds a key schema other than `text` (see
/// [`apply_key`]); subjects that do not exist yet are fine.
///
/// # Errors
/// `Incompatible` naming the subject and both schemas; invalid or unavailable.
pub async fn key_unchanged(
    reg: &Registry,
    strategy: SubjectStrategy,
    valid_topic: &str,
    curated_topic: &str,
    text: &str,
) -> Result<(), RegistryError> {
    let subjects = key_subjects(strategy, valid_topic, curated_topic, text).map_err(|detail| {
        RegistryError::InvalidSchema {
            subject: format!("{valid_topic}-key"),
            detail,
        }
    })?;
    let parsed = Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema {
        subject: subjects[0].clone(),
        detail: e.to_string(),
    })?;
    for subject in subjects {
        match reg.latest(&subject).await {
            Ok(l) => {
                let same = Schema::parse_str(&l.text)
                    .map(|s| s.canonical_form() == parsed.canonical_form())
                    .unwrap_or(false);
                if !same {
                    return Err(RegistryError::Incompatible {
                        subject,
                        detail: format!(
                            "the key schema would change (registered: {}; now: {text}): a key's bytes carry its schema id, so every key would change bytes, partition and compaction identity; a key field's name or type cannot change on existing topics",
                            l.text
                        ),
                    });
                }
            }
            Err(RegistryError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Registers a stream's key schema under its two key subjects ([`key_subjects`]) and returns
/// its id (the same text under both, so the same id). A key subject's schema never changes:
/// the key's bytes carry its id, and partitioning, compaction and dedup all go by those bytes,
/// so a different key schema under an existing key subject (a key field whose type changed)
/// is refused with an error naming the subject; such a stream needs new topics.
///
/// # Errors
/// A changed key schema (`Incompatible`), an invalid one, or the registry unavailable.
pub async fn apply_key(
    reg: &Registry,
    strategy: SubjectStrategy,
    valid_topic: &str,
    curated_topic: &str,
    text: &str,
) -> Result<(u32, Vec<SchemaOutcome>), RegistryError> {
    let subjects = key_subjects(strategy, valid_topic, curated_topic, text).map_err(|detail| {
        RegistryError::InvalidSchema {
            subject: format!("{valid_topic}-key"),
            detail,
        }
    })?;
    key_unchanged(reg, strategy, valid_topic, curated_topic, text).await?;
    let mut id = 0;
    let mut out = Vec::new();
    for subject in subjects {
        match reg.latest(&subject).await {
            Ok(l) => {
                id = l.id;
                out.push(SchemaOutcome::Unchanged {
                    subject,
                    version: l.version,
                });
            }
            Err(RegistryError::NotFound(_)) => {
                reg.set_compatibility(&subject, "BACKWARD").await?;
                let r = reg.register(&subject, text).await?;
                id = r.id;
                out.push(SchemaOutcome::Registered {
                    subject,
                    version: r.version,
                    id: r.id,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok((id, out))
}

/// The subject under which downstream tools look up `curated_topic`'s value schema, named by
/// `strategy` as Confluent's serializers do; `schema` is the schema's JSON text (its record
/// full name is needed by the record strategies).
///
/// # Errors
/// The schema does not parse, or is not a named record where the strategy needs a name.
pub fn downstream_subject(
    strategy: SubjectStrategy,
    curated_topic: &str,
    schema: &str,
) -> Result<String, String> {
    named_subject(strategy, curated_topic, schema, "value")
}

/// A subject named by `strategy` for the topic's `value` or `key` schema.
fn named_subject(
    strategy: SubjectStrategy,
    curated_topic: &str,
    schema: &str,
    part: &str,
) -> Result<String, String> {
    let full_name = || -> Result<String, String> {
        match Schema::parse_str(schema).map_err(|e| e.to_string())? {
            Schema::Record(r) => Ok(r.name.fullname(None)),
            other => Err(format!(
                "the record name strategies need a record schema, not {other:?}"
            )),
        }
    };
    Ok(match strategy {
        SubjectStrategy::Topic => format!("{curated_topic}-{part}"),
        SubjectStrategy::Record => full_name()?,
        SubjectStrategy::TopicRecord => format!("{curated_topic}-{}", full_name()?),
    })
}

/// Registers one schema text under a subject (BACKWARD compatibility), reporting whether it
/// changed anything.
///
/// # Errors
/// Incompatible, invalid, or unavailable.
pub async fn apply_one(
    reg: &Registry,
    subject: &str,
    text: &str,
) -> Result<SchemaOutcome, RegistryError> {
    let parsed = Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema {
        subject: subject.to_owned(),
        detail: e.to_string(),
    })?;
    match reg.latest(subject).await {
        Ok(l)
            if Schema::parse_str(&l.text)
                .map(|s| s.canonical_form() == parsed.canonical_form())
                .unwrap_or(false) =>
        {
            return Ok(SchemaOutcome::Unchanged {
                subject: subject.to_owned(),
                version: l.version,
            });
        }
        Ok(_) => {
            if !reg.is_compatible(subject, text).await? {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    detail: "the registry's BACKWARD check refused it: readers of the new schema could not read existing data (a new field needs a default; a field type cannot change)".into(),
                });
            }
        }
        Err(RegistryError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    reg.set_compatibility(subject, "BACKWARD").await?;
    let r = reg.register(subject, text).await?;
    Ok(SchemaOutcome::Registered {
        subject: subject.to_owned(),
        version: r.version,
        id: r.id,
    })
}

/// Where the schema of a stream is kept.
pub fn schema_path(dir: &Path, source: &str, stream: &str) -> std::path::PathBuf {
    dir.join(source).join(format!("{stream}.avsc"))
}
