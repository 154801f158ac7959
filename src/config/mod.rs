//! The configuration: one TOML file, validated at start.
//!
//! Every struct denies unknown fields, so a typo is an error that names the field rather than
//! a setting silently ignored. Defaults live in one place ([`defaults`]). Secrets are
//! references resolved at load ([`secret`]); their values never reach `Debug` or logs.
//! Cross-field checks run in [`Config::validate`] and report the dotted path of the field
//! (`sources[0].streams[1].primary_key`).

/// Declares serde default functions that answer a fixed string:
/// `string_defaults! { fn p_limit = "limit"; }` stands for
/// `fn p_limit() -> String { "limit".into() }`.
macro_rules! string_defaults {
    ($($(#[$attr:meta])* $vis:vis fn $name:ident = $value:literal;)*) => {
        $(
            $(#[$attr])*
            $vis fn $name() -> String {
                $value.into()
            }
        )*
    };
}

mod auth;
pub mod defaults;
mod request;
pub mod secret;
pub mod security;
mod serve;
pub mod session;
mod source;
pub mod timefmt;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use auth::{Auth, OAuth2ClientAuth, OAuth2Config, OAuth2Grant};
pub use request::{
    BackfillConfig, Body, ExportConfig, Format, Method, Pagination, QuotaHeaders, StatusAction,
    StatusRange, StatusRule,
};
pub use secret::{SecretError, SecretRef, SecretString};
pub use security::{KafkaSasl, KafkaSecurity, KafkaTls, SaslMechanism, SecurityProtocol};
pub use serve::{ServeAuth, ServeClient, ServeConfig, ServeOperation, ServeTls};
pub use session::{LoginBody, SessionConfig, TokenPlace};
pub use source::{
    DriftPolicy, Incremental, KeyFormat, PLACEHOLDERS, ParentConfig, PrimaryKey, QuotaConfig,
    SourceConfig, StreamConfig,
};
pub use timefmt::TimeFormat;
pub use webhook::{ChallengeConfig, FieldSpec, WebhookConfig, WebhookPreset, WebhookSignature};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and client settings.
    pub kafka: KafkaConfig,
    /// Schema registry (Confluent-compatible API).
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Where oversize payloads go (claim-check).
    #[serde(default)]
    pub blob: BlobConfig,
    /// Topic naming and sizing.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The HTTP server of `intake serve` (webhooks, jobs, health, metrics).
    #[serde(default)]
    pub serve: ServeConfig,
    /// Metrics of every long-running command.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// How validate writes dead letters.
    #[serde(default)]
    pub dlq: DlqConfig,
    /// Upstream HTTP APIs and their streams.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// Kafka connection settings shared by every client intake builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated (`bootstrap.servers`).
    pub brokers: String,
    /// Prefix of `client.id` and of the consumer-group names (`<prefix>-fetch`, ...).
    #[serde(default = "defaults::group_prefix")]
    pub group_prefix: String,
    /// Name of this process among its peers; part of the transactional ids of consuming
    /// stages so that a restarted process fences its previous incarnation at once instead of
    /// leaving its open transaction to time out. Defaults to the host name.
    pub instance_id: Option<String>,
    /// `transaction.timeout.ms`: how long the broker waits before aborting a transaction
    /// whose producer vanished. Short keeps read_committed readers moving after a crash.
    #[serde(default = "defaults::transaction_timeout", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Extra librdkafka properties applied to every client (e.g. `security.protocol`), over
    /// intake's own defaults (`linger.ms`, `compression.type`, fetch sizes ...); the ones in
    /// [`KafkaConfig::RESERVED`] are refused.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// `security.protocol`: `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// TLS settings (CA, client certificate) for `ssl` and `sasl_ssl`.
    pub tls: Option<KafkaTls>,
    /// SASL settings (mechanism, user, password) for `sasl_ssl` and `sasl_plaintext`.
    pub sasl: Option<KafkaSasl>,
}

impl KafkaConfig {
    /// The connection settings as one value.
    pub fn security(&self) -> KafkaSecurity<'_> {
        KafkaSecurity {
            protocol: self.security_protocol,
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
        }
    }
}

impl KafkaConfig {
    /// librdkafka properties `kafka.properties` may not set, with where they come from:
    /// exactly-once, fencing, partitioning and secrets depend on intake setting them itself.
    pub const RESERVED: [(&'static str, &'static str); 10] = [
        ("bootstrap.servers", "set `kafka.brokers`"),
        ("group.id", "groups are `<kafka.group_prefix>-<stage>`"),
        (
            "group.instance.id",
            "it is the instance id (`kafka.instance_id`)",
        ),
        (
            "transactional.id",
            "it is derived from the group and instance id",
        ),
        ("transaction.timeout.ms", "set `kafka.transaction_timeout`"),
        ("enable.idempotence", "exactly-once needs it on"),
        ("isolation.level", "stages read read_committed"),
        (
            "enable.auto.commit",
            "offsets commit inside the output transactions",
        ),
        (
            "enable.auto.offset.store",
            "offsets commit inside the output transactions",
        ),
        (
            "partitioner",
            "keys must land where Java clients put them (murmur2_random)",
        ),
    ];
}

/// Schema registry settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API, no trailing slash
    /// (Apicurio: `http://host:8081/apis/ccompat/v7`).
    #[serde(default = "defaults::registry_url")]
    pub url: String,
    /// Folder of Avro schemas as code: `<dir>/<source>/<stream>.avsc`.
    #[serde(default = "defaults::schema_dir")]
    pub schema_dir: PathBuf,
    /// How long a looked-up schema is trusted before the registry is asked for a newer one.
    #[serde(default = "defaults::schema_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The subject under which downstream tools look up a curated topic's value schema, as
    /// Confluent's serializers name it (`topic`: `<topic>-value`). validate itself reads
    /// `<prefix>.<source>.<stream>.valid-value`; both always hold the same schema.
    #[serde(default)]
    pub subject_strategy: SubjectStrategy,
    /// Authentication to the registry: `basic` (Confluent Cloud: API key and secret),
    /// `bearer` or `api_key`, as for sources. Secrets are references.
    pub auth: Option<Auth>,
    /// TLS to the registry: a private CA.
    pub tls: Option<RegistryTls>,
}

/// `[registry.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTls {
    /// PEM file of the CA that signed the registry's certificate (default: the system's trust
    /// store, plus the well-known roots).
    pub ca_file: PathBuf,
}

/// How a curated topic's value subject is named (Confluent's subject name strategies).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// `<topic>-value` (TopicNameStrategy, the default of Confluent's serializers).
    #[default]
    Topic,
    /// `<record full name>` (RecordNameStrategy): one subject per record type, whatever the
    /// topic; streams whose schemas share a full name share the subject.
    Record,
    /// `<topic>-<record full name>` (TopicRecordNameStrategy).
    TopicRecord,
}

/// Claim-check blob store for payloads over the Kafka message limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobConfig {
    /// `file:///abs/dir` (default: `./.intake/blobs`) or `s3://bucket/prefix`
    /// (credentials from the usual AWS environment variables).
    #[serde(default = "defaults::blob_url")]
    pub url: String,
    /// Bodies larger than this many bytes go to the blob store and a `blob-ref` is landed.
    /// Keep it below the broker's `message.max.bytes` (1 MiB by default) less headers.
    #[serde(default = "defaults::max_inline_bytes")]
    pub max_inline_bytes: usize,
    /// The largest record validate stores by claim-check (its JSON bytes): a record over its
    /// stream's `max_message_bytes` goes to the blob store up to this size; above it, it is
    /// dead-lettered as `too_large`.
    #[serde(default = "defaults::max_record_bytes")]
    pub max_record_bytes: usize,
}

/// Smallest `max_message_bytes` of a stream.
pub const MIN_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest `max_message_bytes` of a stream: 8 MiB, what managed Kafka services allow.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Topic naming and sizing; the topic set itself is declared in `topics/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Prefix of every topic name (`<prefix>.landing`, `<prefix>.<source>.<stream>`).
    #[serde(default = "defaults::topic_prefix")]
    pub prefix: String,
    /// Folder of topic declarations.
    #[serde(default = "defaults::topics_dir")]
    pub dir: PathBuf,
    /// Replication factor for created topics (1 on a single local broker).
    #[serde(default = "defaults::replication_factor")]
    pub replication_factor: i32,
    /// `min.insync.replicas` of every declared topic (for example 2 with replication factor
    /// 3: a write needs two copies, one broker may be down); absent: the broker's default.
    /// Set on created topics and corrected on existing ones by `intake topics apply`.
    pub min_insync_replicas: Option<i32>,
}

/// Dead-letter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    /// The quiet DLQ: input that arrives again unchanged and fails the same way (same stream,
    /// kind, field and value) within this long of its dead letter is counted on that dead
    /// letter (`intake dlq summary`: occurrences, last seen) instead of being written again;
    /// after it, the next failure is written again as a reminder. `0s`: every failure is
    /// written. Keep it shorter than the DLQ topic's retention (30 days).
    #[serde(default = "defaults::dlq_quiet_for", with = "humantime_serde")]
    pub quiet_for: Duration,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            quiet_for: defaults::dlq_quiet_for(),
        }
    }
}

/// Metrics settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `host:port` of the Prometheus `GET /metrics` listener of every long-running command
    /// (`intake run`, `fetch`, `validate`, `dedup`, `serve`); absent: no listener (one-shot
    /// commands never open one). `intake serve` also serves `/metrics` on `serve.listen`, or on
    /// `serve.admin_listen` when that is set.
    pub metrics_addr: Option<String>,
}

/// An error in the configuration, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (serde names the field and line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// What serde/toml reported, with line and column.
        message: String,
    },
    /// A value is invalid.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret could not be resolved.
    #[error("config field `{field}`: {source}")]
    Secret {
        /// Dotted path of the field.
        field: String,
        /// Why it could not be resolved (never the value).
        source: SecretError,
    },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `Ok` when the check `ok` holds, otherwise the [`invalid`] error of `field` with `reason`.
pub(crate) fn ensure(
    ok: bool,
    field: impl Into<String>,
    reason: impl Into<String>,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(field, reason))
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it (schema and
    /// topic folders, `file://` blob URLs are absolute by definition) resolve against the
    /// current directory, like every other path a user passes on the command line.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file or the field at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field at fault.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks that serde cannot express.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must name at least one broker"));
        }
        check_name("topics.prefix", &self.topics.prefix)?;
        check_name("kafka.group_prefix", &self.kafka.group_prefix)?;
        self.kafka.security().check()?;
        for (key, why) in KafkaConfig::RESERVED
            .iter()
            .chain(security::OWNED_PROPERTIES.iter())
        {
            if self.kafka.properties.contains_key(*key) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    format!("intake sets it itself: {why}"),
                ));
            }
        }
        if let Some(Auth::Oauth2(o)) = &self.registry.auth {
            // A client's own token: any process may fetch one. A user's refresh token would
            // need an owner and storage, which only fetch has.
            if o.grant != OAuth2Grant::ClientCredentials {
                return Err(invalid(
                    "registry.auth.grant",
                    "the registry takes oauth2 with grant = \"client_credentials\" only",
                ));
            }
            o.validate("registry.auth")?;
        }
        if self.registry.url.ends_with('/') {
            return Err(invalid("registry.url", "must not end with '/'"));
        }
        if self.blob.max_inline_bytes < 1024 || self.blob.max_inline_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "blob.max_inline_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(self.blob.url.starts_with("file://") || self.blob.url.starts_with("s3://")) {
            return Err(invalid("blob.url", "must start with file:// or s3://"));
        }
        if let Some(addr) = &self.telemetry.metrics_addr {
            serve::check_addr("telemetry.metrics_addr", addr)?;
        }
        self.serve.check(&self.sources)?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            s.validate(&format!("sources[{i}]"))?;
            if !seen.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("sources[{i}].name"),
                    format!("duplicate source `{}`", s.name),
                ));
            }
            // One token id is one token: its OAuth 2.0 settings (one refresh token, one owner)
            // cannot differ between the sources that share it.
            if let Some((j, other)) = self.sources[..i]
                .iter()
                .enumerate()
                .find(|(_, o)| o.token_id() == s.token_id())
                && matches!(
                    (&s.auth, &other.auth),
                    (Some(Auth::Oauth2(_)), _) | (_, Some(Auth::Oauth2(_)))
                )
                && s.auth != other.auth
            {
                return Err(invalid(
                    format!("sources[{i}].auth"),
                    format!(
                        "shares token id `{}` with sources[{j}], whose oauth2 settings differ",
                        s.token_id()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Looks a source up by name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Looks a stream up by `source/stream` or by the stream name alone when unique.
    pub fn stream(&self, spec: &str) -> Option<(&SourceConfig, &StreamConfig)> {
        let (src, stream) = match spec.split_once('/') {
            Some((a, b)) => (Some(a), b),
            None => (None, spec),
        };
        let mut found = self
            .sources
            .iter()
            .filter(|s| src.is_none_or(|n| n == s.name))
            .flat_map(|s| {
                s.streams
                    .iter()
                    .filter(|st| st.name == stream)
                    .map(move |st| (s, st))
            });
        let first = found.next()?;
        if found.next().is_some() {
            None
        } else {
            Some(first)
        }
    }

    /// The name of this process among its peers: `INTAKE_INSTANCE_ID`, else
    /// `kafka.instance_id`, else the host name. Processes of one stage on one host need
    /// distinct ids; a restarted process should reuse its id.
    pub fn instance_id(&self) -> String {
        std::env::var("INTAKE_INSTANCE_ID")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| self.kafka.instance_id.clone())
            .unwrap_or_else(defaults::hostname)
    }
}

/// Topic, source and stream names become parts of topic names and group ids: keep them to
/// the characters Kafka allows and that do not need escaping in a key (`/` separates).
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{name}` must be 1-100 characters of [A-Za-z0-9._-]"),
        ))
    }
}

#[cfg(test)]
mod tests;
