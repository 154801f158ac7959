//! How intake's Kafka clients connect: `security.protocol`, TLS (server verification on by
//! default, a custom CA, client certificates for mTLS) and SASL (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512, and OAUTHBEARER with OIDC client credentials: librdkafka's built-in
//! `sasl.oauthbearer.method=oidc`) as typed settings under `[kafka]`, with secrets as
//! references.
//!
//! [`KafkaSecurity::check`] refuses contradictions at load (SASL settings on a protocol without
//! SASL, a client certificate without its key), [`KafkaSecurity::resolve`] secrets and
//! unreadable certificate files when the clients are built, each naming its field;
//! [`ResolvedSecurity::properties`] turns the settings into librdkafka properties, the only
//! place that does.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, SecretRef, SecretString, invalid};

/// `security.protocol` of every Kafka client.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (a local broker).
    #[default]
    Plaintext,
    /// TLS; the client authenticates with a certificate when `kafka.tls.cert_file` is set.
    Ssl,
    /// SASL without TLS (credentials in clear on the network: only inside a trusted network).
    SaslPlaintext,
    /// SASL over TLS: what Confluent Cloud, Amazon MSK (SCRAM), Aiven and Redpanda Cloud use.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is encrypted.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `[kafka.tls]`: used when `security_protocol` is `ssl` or `sasl_ssl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM file of the CA certificate(s) that signed the brokers' certificates. Default: the
    /// system's trust store (right for managed services with public certificates).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one (mTLS). Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Password of an encrypted `key_file`.
    pub key_password: Option<SecretRef>,
    /// Whether the broker's certificate must name the host connected to. Turn off only for
    /// brokers reached through an address their certificate does not list.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

impl Default for KafkaTls {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_password: None,
            verify_hostname: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// SASL mechanisms intake supports.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// User name and password in clear (inside TLS): Confluent Cloud API keys.
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response (Amazon MSK uses SHA-512).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// OAuth 2.0 bearer tokens, fetched by librdkafka from an OIDC token endpoint with the
    /// client credentials grant and refreshed before they expire (Confluent Cloud OAuth,
    /// Keycloak, Okta, Entra ID ...).
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// `[kafka.sasl]`: used when `security_protocol` is `sasl_ssl` or `sasl_plaintext`.
/// PLAIN and SCRAM take `username` and `password`; OAUTHBEARER takes `token_endpoint_url`,
/// `client_id`, `client_secret` and optionally `scope` and `extensions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub mechanism: SaslMechanism,
    /// User name (Confluent Cloud: the API key). PLAIN and SCRAM.
    pub username: Option<String>,
    /// Password (Confluent Cloud: the API secret), from env or a file. Never logged. PLAIN and
    /// SCRAM.
    pub password: Option<SecretRef>,
    /// OAUTHBEARER: the identity provider's token endpoint (`https://.../token`), asked for
    /// tokens with the client credentials grant.
    pub token_endpoint_url: Option<String>,
    /// OAUTHBEARER: the OAuth client id.
    pub client_id: Option<String>,
    /// OAUTHBEARER: the OAuth client secret, from env or a file. Never logged.
    pub client_secret: Option<SecretRef>,
    /// OAUTHBEARER: the scope to ask for (space-separated), if the provider wants one.
    pub scope: Option<String>,
    /// OAUTHBEARER: SASL extensions sent with the token (Confluent Cloud:
    /// `logicalCluster` and `identityPoolId`).
    #[serde(default)]
    pub extensions: std::collections::BTreeMap<String, String>,
}

impl KafkaSasl {
    /// The fields of each kind of mechanism, for the checks.
    const PASSWORD_FIELDS: [&'static str; 2] = ["username", "password"];
    const OAUTH_FIELDS: [&'static str; 5] = [
        "token_endpoint_url",
        "client_id",
        "client_secret",
        "scope",
        "extensions",
    ];

    fn is_set(&self, field: &str) -> bool {
        match field {
            "username" => self.username.is_some(),
            "password" => self.password.is_some(),
            "token_endpoint_url" => self.token_endpoint_url.is_some(),
            "client_id" => self.client_id.is_some(),
            "client_secret" => self.client_secret.is_some(),
            "scope" => self.scope.is_some(),
            "extensions" => !self.extensions.is_empty(),
            _ => false,
        }
    }

    /// Refuses a field of the other kind of mechanism, a missing one, and malformed values.
    fn check(&self) -> Result<(), ConfigError> {
        let m = self.mechanism.as_str();
        let (needed, foreign): (&[&str], &[&str]) = if self.mechanism == SaslMechanism::OAuthBearer
        {
            (&Self::OAUTH_FIELDS[..3], &Self::PASSWORD_FIELDS)
        } else {
            (&Self::PASSWORD_FIELDS, &Self::OAUTH_FIELDS)
        };
        if let Some(f) = foreign.iter().find(|f| self.is_set(f)) {
            return Err(invalid(
                format!("kafka.sasl.{f}"),
                format!("does not apply to mechanism = \"{m}\""),
            ));
        }
        if let Some(f) = needed.iter().find(|f| !self.is_set(f)) {
            return Err(invalid(
                format!("kafka.sasl.{f}"),
                format!("is needed with mechanism = \"{m}\""),
            ));
        }
        for (field, v) in [
            ("kafka.sasl.username", &self.username),
            ("kafka.sasl.client_id", &self.client_id),
        ] {
            if v.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if let Some(url) = &self.token_endpoint_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
                _ => {
                    return Err(invalid(
                        "kafka.sasl.token_endpoint_url",
                        format!("`{url}` is not an http(s) URL"),
                    ));
                }
            }
        }
        for (k, v) in &self.extensions {
            // librdkafka takes them as one `k=v,k=v` string.
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) || v.contains(',') {
                return Err(invalid(
                    format!("kafka.sasl.extensions.{k}"),
                    "names are letters and digits, values hold no ','",
                ));
            }
        }
        Ok(())
    }
}

/// The connection settings of `[kafka]`, as one value.
#[derive(Debug, Clone, Copy)]
pub struct KafkaSecurity<'a> {
    /// `kafka.security_protocol`.
    pub protocol: SecurityProtocol,
    /// `kafka.tls`.
    pub tls: Option<&'a KafkaTls>,
    /// `kafka.sasl`.
    pub sasl: Option<&'a KafkaSasl>,
}

/// The settings with their secrets resolved, ready for a client.
#[derive(Debug, Clone, Default)]
pub struct ResolvedSecurity {
    properties: Vec<(&'static str, String)>,
    secrets: Vec<(&'static str, SecretString)>,
}

impl KafkaSecurity<'_> {
    /// Refuses contradictions and unreadable files, naming the field.
    ///
    /// # Errors
    /// The first field at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        let p = self.protocol.as_str();
        match (self.protocol.sasl(), self.sasl) {
            (true, None) => {
                return Err(invalid(
                    "kafka.sasl",
                    format!(
                        "security_protocol = \"{p}\" needs [kafka.sasl] (mechanism, username, password)"
                    ),
                ));
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "kafka.sasl",
                    format!(
                        "is set but security_protocol = \"{p}\" does not use SASL (sasl_ssl does)"
                    ),
                ));
            }
            _ => {}
        }
        if let Some(s) = self.sasl {
            s.check()?;
        }
        let Some(tls) = self.tls else {
            return Ok(());
        };
        if !self.protocol.tls() {
            return Err(invalid(
                "kafka.tls",
                format!(
                    "is set but security_protocol = \"{p}\" does not use TLS (ssl or sasl_ssl do)"
                ),
            ));
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "kafka.tls.key_file",
                    "cert_file is set: its key is needed too",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "kafka.tls.cert_file",
                    "key_file is set: its certificate is needed too",
                ));
            }
            _ => {}
        }
        if tls.key_password.is_some() && tls.key_file.is_none() {
            return Err(invalid("kafka.tls.key_password", "is set without key_file"));
        }
        Ok(())
    }

    /// Resolves the secrets and checks that the certificate files can be read.
    ///
    /// # Errors
    /// A secret that cannot be resolved or a file that cannot be read, naming its field.
    pub fn resolve(&self) -> Result<ResolvedSecurity, ConfigError> {
        let mut r = ResolvedSecurity::default();
        if let Some(tls) = self.tls {
            for (field, file) in [
                ("kafka.tls.ca_file", &tls.ca_file),
                ("kafka.tls.cert_file", &tls.cert_file),
                ("kafka.tls.key_file", &tls.key_file),
            ] {
                if let Some(f) = file {
                    readable_pem(field, f)?;
                }
            }
        }
        r.properties
            .push(("security.protocol", self.protocol.as_str().to_owned()));
        if let Some(tls) = self.tls.filter(|_| self.protocol.tls()) {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &tls.ca_file {
                r.properties.push(("ssl.ca.location", path(ca)));
            }
            if let Some(cert) = &tls.cert_file {
                r.properties.push(("ssl.certificate.location", path(cert)));
            }
            if let Some(key) = &tls.key_file {
                r.properties.push(("ssl.key.location", path(key)));
            }
            if let Some(pw) = &tls.key_password {
                r.secrets
                    .push(("ssl.key.password", secret("kafka.tls.key_password", pw)?));
            }
            r.properties.push((
                "ssl.endpoint.identification.algorithm",
                if tls.verify_hostname { "https" } else { "none" }.to_owned(),
            ));
        }
        if let Some(s) = self.sasl.filter(|_| self.protocol.sasl()) {
            r.properties
                .push(("sasl.mechanism", s.mechanism.as_str().to_owned()));
            if let Some(u) = &s.username {
                r.properties.push(("sasl.username", u.clone()));
            }
            if let Some(p) = &s.password {
                r.secrets
                    .push(("sasl.password", secret("kafka.sasl.password", p)?));
            }
            if s.mechanism == SaslMechanism::OAuthBearer {
                if !librdkafka_has("oidc") {
                    return Err(invalid(
                        "kafka.sasl.mechanism",
                        "OAUTHBEARER needs librdkafka's OIDC support, which this build of intake lacks (librdkafka was built without libcurl: install libcurl's headers, Debian: libcurl4-openssl-dev, and rebuild)",
                    ));
                }
                // librdkafka's built-in OIDC client: it asks the token endpoint with the client
                // credentials grant (HTTP basic client authentication) and refreshes the token
                // before it expires, on its own threads.
                r.properties
                    .push(("sasl.oauthbearer.method", "oidc".into()));
                for (k, v) in [
                    ("sasl.oauthbearer.token.endpoint.url", &s.token_endpoint_url),
                    ("sasl.oauthbearer.client.id", &s.client_id),
                    ("sasl.oauthbearer.scope", &s.scope),
                ] {
                    if let Some(v) = v {
                        r.properties.push((k, v.clone()));
                    }
                }
                if !s.extensions.is_empty() {
                    let ext: Vec<String> = s
                        .extensions
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    r.properties
                        .push(("sasl.oauthbearer.extensions", ext.join(",")));
                }
                if let Some(cs) = &s.client_secret {
                    r.secrets.push((
                        "sasl.oauthbearer.client.secret",
                        secret("kafka.sasl.client_secret", cs)?,
                    ));
                }
            }
        }
        Ok(r)
    }
}

impl ResolvedSecurity {
    /// The librdkafka properties to set on every client, secrets included (the caller hands
    /// them straight to librdkafka).
    pub fn properties(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(self.secrets.iter().map(|(k, v)| (*k, v.expose())))
    }
}

/// Whether the linked librdkafka was built with `feature` (its `builtin.features`).
pub fn librdkafka_has(feature: &str) -> bool {
    rdkafka::ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .is_ok_and(|f| f.split(',').any(|x| x.trim() == feature))
}

fn secret(field: &str, r: &SecretRef) -> Result<SecretString, ConfigError> {
    r.resolve().map_err(|source| ConfigError::Secret {
        field: field.into(),
        source,
    })
}

/// A file librdkafka will read: it must exist and hold PEM text.
fn readable_pem(field: &str, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read(path)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
    if !text.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(invalid(
            field,
            format!("{} is not a PEM file (no -----BEGIN line)", path.display()),
        ));
    }
    Ok(())
}

/// librdkafka properties that the typed settings own; `kafka.properties` may not set them.
pub const OWNED_PROPERTIES: [(&str, &str); 19] = [
    ("security.protocol", "set `kafka.security_protocol`"),
    ("sasl.mechanism", "set `kafka.sasl.mechanism`"),
    ("sasl.mechanisms", "set `kafka.sasl.mechanism`"),
    ("sasl.username", "set `kafka.sasl.username`"),
    (
        "sasl.password",
        "set `kafka.sasl.password` (from env or a file, never literal)",
    ),
    ("ssl.ca.location", "set `kafka.tls.ca_file`"),
    ("ssl.certificate.location", "set `kafka.tls.cert_file`"),
    ("ssl.key.location", "set `kafka.tls.key_file`"),
    (
        "ssl.key.password",
        "set `kafka.tls.key_password` (from env or a file, never literal)",
    ),
    (
        "ssl.endpoint.identification.algorithm",
        "set `kafka.tls.verify_hostname`",
    ),
    (
        "enable.ssl.certificate.verification",
        "certificates are always verified: trust a private CA with `kafka.tls.ca_file`",
    ),
    (
        "sasl.oauthbearer.method",
        "set `kafka.sasl.mechanism = \"OAUTHBEARER\"`",
    ),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "set `kafka.sasl.token_endpoint_url`",
    ),
    ("sasl.oauthbearer.client.id", "set `kafka.sasl.client_id`"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "set `kafka.sasl.client_id`",
    ),
    (
        "sasl.oauthbearer.client.secret",
        "set `kafka.sasl.client_secret` (from env or a file, never literal)",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "set `kafka.sasl.client_secret` (from env or a file, never literal)",
    ),
    ("sasl.oauthbearer.scope", "set `kafka.sasl.scope`"),
    ("sasl.oauthbearer.extensions", "set `kafka.sasl.extensions`"),
];

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn kafka(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(&format!("[kafka]\nbrokers = \"b:9094\"\n{extra}"))
    }

    fn field(extra: &str) -> String {
        match kafka(extra) {
            Err(crate::config::ConfigError::Invalid { field, .. }) => field,
            other => panic!("{extra}: expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn contradictions_name_the_field() {
        assert_eq!(field("security_protocol = \"sasl_ssl\""), "kafka.sasl");
        assert_eq!(
            field(
                "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = { env = \"P\" }"
            ),
            "kafka.sasl"
        );
        assert_eq!(
            field("[kafka.tls]\nca_file = \"/ca.pem\""),
            "kafka.tls",
            "TLS settings on plaintext"
        );
        assert_eq!(
            field("security_protocol = \"ssl\"\n[kafka.tls]\ncert_file = \"/c.pem\""),
            "kafka.tls.key_file"
        );
        assert_eq!(
            field(
                "security_protocol = \"sasl_ssl\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \" \"\npassword = { env = \"P\" }"
            ),
            "kafka.sasl.username"
        );
        assert_eq!(
            field("[kafka.properties]\n\"sasl.username\" = \"u\""),
            "kafka.properties.\"sasl.username\""
        );
        assert_eq!(
            field("[kafka.properties]\n\"enable.ssl.certificate.verification\" = \"false\""),
            "kafka.properties.\"enable.ssl.certificate.verification\""
        );
    }

    #[test]
    fn oauthbearer_takes_its_own_fields_and_becomes_librdkafka_oidc() {
        let oauth = |extra: &str| {
            format!(
                "security_protocol = \"sasl_ssl\"\n[kafka.sasl]\nmechanism = \"OAUTHBEARER\"\n{extra}"
            )
        };
        let full = "token_endpoint_url = \"https://idp.example/token\"\nclient_id = \"c\"\nclient_secret = { env = \"INTAKE_TEST_OAUTH_SECRET_UNSET\" }";
        assert_eq!(
            field(&oauth(&format!("{full}\nusername = \"u\""))),
            "kafka.sasl.username",
            "a password mechanism's field"
        );
        assert_eq!(
            field(&oauth(
                "token_endpoint_url = \"https://idp.example/token\"\nclient_id = \"c\""
            )),
            "kafka.sasl.client_secret"
        );
        assert_eq!(
            field(&oauth(
                &full.replace("https://idp.example/token", "idp/token")
            )),
            "kafka.sasl.token_endpoint_url"
        );
        assert_eq!(
            field(&oauth(&format!(
                "{full}\nextensions = {{ \"a,b\" = \"x\" }}"
            ))),
            "kafka.sasl.extensions.a,b"
        );
        assert_eq!(
            field(
                "security_protocol = \"sasl_ssl\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword = \"p\"\nclient_id = \"c\""
            ),
            "kafka.sasl.client_id",
            "an OAUTHBEARER field with SCRAM"
        );
        assert_eq!(
            field(
                "security_protocol = \"sasl_ssl\"\n[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\""
            ),
            "kafka.sasl.password"
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "oauth-s3cret\n").unwrap();
        let cfg = kafka(&oauth(&format!(
            "token_endpoint_url = \"http://127.0.0.1:8180/realms/intake/protocol/openid-connect/token\"\n\
             client_id = \"intake-kafka\"\nclient_secret = {{ file = \"{}\" }}\nscope = \"kafka\"\n\
             extensions = {{ logicalCluster = \"lkc-1\", identityPoolId = \"pool-2\" }}",
            secret.display()
        )))
        .unwrap();
        let r = cfg.kafka.security().resolve().unwrap();
        let props: std::collections::BTreeMap<_, _> = r.properties().collect();
        assert_eq!(props["sasl.mechanism"], "OAUTHBEARER");
        assert_eq!(props["sasl.oauthbearer.method"], "oidc");
        assert_eq!(
            props["sasl.oauthbearer.token.endpoint.url"],
            "http://127.0.0.1:8180/realms/intake/protocol/openid-connect/token"
        );
        assert_eq!(props["sasl.oauthbearer.client.id"], "intake-kafka");
        assert_eq!(props["sasl.oauthbearer.client.secret"], "oauth-s3cret");
        assert_eq!(props["sasl.oauthbearer.scope"], "kafka");
        assert_eq!(
            props["sasl.oauthbearer.extensions"],
            "identityPoolId=pool-2,logicalCluster=lkc-1"
        );
        assert!(!props.contains_key("sasl.username") && !props.contains_key("sasl.password"));
        assert!(!format!("{cfg:?}{r:?}").contains("oauth-s3cret"));
        // librdkafka (built with libcurl) accepts them all.
        assert!(
            super::librdkafka_has("oidc"),
            "librdkafka was built without OIDC (libcurl missing at build time)"
        );
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:1");
        for (k, v) in r.properties() {
            c.set(k, v);
        }
        let p: Result<rdkafka::producer::BaseProducer, _> = c.create();
        assert!(p.is_ok(), "{:?}", p.err());
        // An unset secret is refused when the clients are built, naming the field.
        match kafka(&oauth(full)).unwrap().kafka.security().resolve() {
            Err(crate::config::ConfigError::Secret { field, .. }) => {
                assert_eq!(field, "kafka.sasl.client_secret")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_become_librdkafka_properties_with_secrets_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-value\n").unwrap();
        let cfg = kafka(&format!(
            "security_protocol = \"sasl_ssl\"\n[kafka.tls]\nca_file = \"{}\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"svc\"\npassword = {{ file = \"{}\" }}",
            ca.display(),
            pw.display()
        ))
        .unwrap();
        let r = cfg.kafka.security().resolve().unwrap();
        let props: std::collections::BTreeMap<_, _> = r.properties().collect();
        assert_eq!(props["security.protocol"], "sasl_ssl");
        assert_eq!(props["ssl.ca.location"], ca.display().to_string());
        assert_eq!(props["ssl.endpoint.identification.algorithm"], "https");
        assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-256");
        assert_eq!(props["sasl.username"], "svc");
        assert_eq!(props["sasl.password"], "s3cret-value");
        // Neither the config's nor the resolved settings' Debug shows the secret.
        assert!(!format!("{cfg:?}{r:?}").contains("s3cret"));
        // A CA file that is not PEM is refused when the clients are built, naming the field.
        std::fs::write(&ca, "not a certificate").unwrap();
        match cfg.kafka.security().resolve() {
            Err(crate::config::ConfigError::Invalid { field, .. }) => {
                assert_eq!(field, "kafka.tls.ca_file")
            }
            other => panic!("{other:?}"),
        }
    }
}
