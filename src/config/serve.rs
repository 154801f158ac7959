//! `[serve]`: the HTTP server of `intake serve` — its listeners and who may call it.
//!
//! Webhooks authenticate with their HMAC signature (`sources[].webhook`). Everything else a
//! client does (`POST /v1/jobs`, `GET /v1/jobs/{id}`, `PUT /v1/blobs/{name}`) needs an API key
//! from `[[serve.clients]]`, sent as `Authorization: Bearer <key>`; each client is allowed a set
//! of operations and the sources it may act for. Without clients those endpoints refuse every
//! request, unless `serve.auth = "none"` turns authentication off (local demos only).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, SecretRef, SourceConfig, check_name, defaults, ensure};

/// `intake serve` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address the HTTP server binds.
    #[serde(default = "defaults::serve_listen")]
    pub listen: String,
    /// A second listener for operators: `/healthz`, `/readyz` and `/metrics`. When set,
    /// `/metrics` is served only there (not on `listen`).
    pub admin_listen: Option<String>,
    /// Largest accepted request body in bytes (413 above it).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Webhook timestamp tolerance: signatures older or newer than this are refused (replay window).
    #[serde(default = "defaults::webhook_tolerance", with = "humantime_serde")]
    pub webhook_tolerance: Duration,
    /// How job and blob requests authenticate.
    #[serde(default)]
    pub auth: ServeAuth,
    /// The API clients (`serve.auth = "api_keys"`).
    #[serde(default)]
    pub clients: Vec<ServeClient>,
    /// HTTPS on `listen` (TLS 1.2/1.3 by rustls). Absent: plain HTTP, for a TLS-terminating
    /// proxy or load balancer in front. `admin_listen` stays plain HTTP either way.
    pub tls: Option<ServeTls>,
}

/// `[serve.tls]`: the server's certificate and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeTls {
    /// PEM file: the server certificate, then any intermediates.
    pub cert_file: std::path::PathBuf,
    /// PEM file: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

/// How `intake serve` authenticates job and blob requests.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServeAuth {
    /// `Authorization: Bearer <key>` with a key of `[[serve.clients]]`; none configured: every
    /// job and blob request is refused (401).
    #[default]
    ApiKeys,
    /// No authentication: anyone who reaches the port may submit jobs and upload blobs. For a
    /// local demo only.
    None,
}

/// One API client of `intake serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeClient {
    /// Who it is: logged with each request it makes (the key never is).
    pub name: String,
    /// Its API key, a secret reference (`{ env = "X" }` or `{ file = "p" }`).
    pub key: SecretRef,
    /// What it may do.
    pub operations: Vec<ServeOperation>,
    /// The sources it may act for (`"*"`: every source).
    pub sources: Vec<String>,
}

impl ServeClient {
    /// Whether the client may act for `source`.
    pub fn may_act_for(&self, source: &str) -> bool {
        self.sources.iter().any(|s| s == "*" || s == source)
    }
}

/// An operation a serve client may be allowed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServeOperation {
    /// Submit jobs (`POST /v1/jobs`) and read them (`GET /v1/jobs/{id}`).
    Jobs,
    /// Upload blobs (`PUT /v1/blobs/{name}`).
    Blobs,
}

impl ServeOperation {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Blobs => "blobs",
        }
    }
}

/// Checks that `addr` is `host:port`.
pub(crate) fn check_addr(field: &str, addr: &str) -> Result<(), ConfigError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    ensure(ok, field, format!("`{addr}` is not host:port"))
}

impl ServeConfig {
    /// Cross-field checks: listener addresses, client names, rights and sources.
    pub(crate) fn check(&self, sources: &[SourceConfig]) -> Result<(), ConfigError> {
        check_addr("serve.listen", &self.listen)?;
        if let Some(addr) = &self.admin_listen {
            check_addr("serve.admin_listen", addr)?;
            ensure(
                *addr != self.listen,
                "serve.admin_listen",
                "must differ from serve.listen (it exists to keep /metrics off the public listener)",
            )?;
        }
        ensure(
            self.auth != ServeAuth::None || self.clients.is_empty(),
            "serve.auth",
            "is \"none\" (no authentication) while serve.clients are set; remove one",
        )?;
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let at = format!("serve.clients[{i}]");
            check_name(&format!("{at}.name"), &c.name)?;
            ensure(
                names.insert(c.name.as_str()),
                format!("{at}.name"),
                format!("duplicate client `{}`", c.name),
            )?;
            ensure(
                !c.operations.is_empty(),
                format!("{at}.operations"),
                "allow at least one of \"jobs\", \"blobs\"",
            )?;
            ensure(
                !c.sources.is_empty(),
                format!("{at}.sources"),
                "name at least one source, or \"*\" for every source",
            )?;
            for s in &c.sources {
                ensure(
                    s == "*" || sources.iter().any(|x| x.name == *s),
                    format!("{at}.sources"),
                    format!("no source `{s}` is configured"),
                )?;
            }
        }
        Ok(())
    }
}
