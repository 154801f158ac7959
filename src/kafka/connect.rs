//! The start-up check of the Kafka connection: every long-running command asks the cluster for
//! its metadata with the configured security settings before it starts work, and a wrong
//! password, an untrusted or expired certificate or a plaintext client at a TLS listener ends
//! start-up with one line naming the setting to fix and the reason librdkafka gave — instead of
//! a client that retries silently forever.
//!
//! librdkafka reports such failures through its error callback (and logs), not in the result of
//! the metadata request, which only times out; [`Recorder`] keeps those reasons and
//! [`diagnose`] maps them to the setting at fault.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;

use super::Kafka;
use crate::config::SaslMechanism;

/// What the check found.
#[derive(Debug, Clone)]
pub struct Reached {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// Topics visible to this client.
    pub topics: usize,
}

/// Why the cluster could not be reached, with the setting most likely at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to Kafka at {brokers}: check `{field}`: {reason}")]
pub struct ConnectError {
    /// `kafka.brokers`.
    pub brokers: String,
    /// The config field to look at (`kafka.sasl.password`, `kafka.tls.ca_file`, ...).
    pub field: String,
    /// librdkafka's reason (never a secret: it does not print credentials).
    pub reason: String,
}

/// Keeps what librdkafka reported while connecting, with how often.
#[derive(Default)]
pub struct Recorder {
    reasons: Mutex<Vec<(String, usize)>>,
}

impl Recorder {
    fn push(&self, reason: String) {
        let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = r.iter_mut().find(|(x, _)| *x == reason) {
            *n += 1;
        } else if r.len() < 64 {
            r.push((reason, 1));
        }
    }

    fn reasons(&self) -> Vec<(String, usize)> {
        self.reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.push(format!("{fac}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Recorder {}

/// The setting at fault for what librdkafka reported (each reason with how often it came),
/// if it says so clearly; `None` when the reasons name nothing certain (a broker that is down
/// or still starting: the caller keeps trying).
pub fn diagnose(reasons: &[(String, usize)]) -> Option<(&'static str, String)> {
    // Most specific first; each rule is phrases of librdkafka's (or OpenSSL's, or an identity
    // provider's) messages that must all be in one reason. Only what cannot come from a broker
    // that is merely down or restarting: a disconnect during the first request ("might be
    // caused by incorrect security.protocol") also happens when a broker shuts down, so it is
    // not a rule.
    const RULES: [(&[&str], &str); 16] = [
        // librdkafka's OIDC client could not get a token ("Failed to acquire SASL OAUTHBEARER
        // token: <the token endpoint's answer>"): refused client credentials (`invalid_client`,
        // `unauthorized_client`: Keycloak, Okta, Entra ID), a refused scope, or no answer.
        (&["oauthbearer token", "client"], "kafka.sasl.client_secret"),
        (&["oauthbearer token", "scope"], "kafka.sasl.scope"),
        (&["oauthbearer token"], "kafka.sasl.token_endpoint_url"),
        // The broker refused the token (RFC 7628's error answer: Kafka's validation found its
        // audience, issuer, signature or lifetime wrong): the OAuth client's.
        (
            &["sasl authentication error", "invalid_token"],
            "kafka.sasl.client_id",
        ),
        (&["Authentication failed"], "kafka.sasl.password"),
        (&["invalid credentials"], "kafka.sasl.password"),
        (&["Unsupported SASL mechanism"], "kafka.sasl.mechanism"),
        (&["SASL mechanism"], "kafka.sasl.mechanism"),
        (&["certificate expired"], "kafka.tls.cert_file"),
        (&["certificate required"], "kafka.tls.cert_file"),
        (&["bad certificate"], "kafka.tls.cert_file"),
        (&["unknown ca"], "kafka.tls.cert_file"),
        // What Kafka's broker answers to a client certificate it refuses (expired, or from a
        // CA it does not trust).
        (&["alert certificate unknown"], "kafka.tls.cert_file"),
        (&["Hostname mismatch"], "kafka.tls.verify_hostname"),
        (&["certificate verify failed"], "kafka.tls.ca_file"),
        (&["ssl.key"], "kafka.tls.key_file"),
    ];
    for (phrases, field) in RULES {
        let phrases: Vec<String> = phrases.iter().map(|p| p.to_ascii_lowercase()).collect();
        if let Some((r, _)) = reasons.iter().find(|(r, _)| {
            let r = r.to_ascii_lowercase();
            phrases.iter().all(|p| r.contains(p.as_str()))
        }) {
            return Some((field, r.clone()));
        }
    }
    None
}

/// [`diagnose`] for a client of `mechanism`: with OAUTHBEARER there is no password, and a
/// token the broker refuses (its audience, issuer or scope) is the OAuth client's.
fn diagnose_for(
    mechanism: Option<SaslMechanism>,
    reasons: &[(String, usize)],
) -> Option<(&'static str, String)> {
    let (field, reason) = diagnose(reasons)?;
    match (mechanism, field) {
        (Some(SaslMechanism::OAuthBearer), "kafka.sasl.password") => {
            Some(("kafka.sasl.client_id", reason))
        }
        _ => Some((field, reason)),
    }
}

impl Kafka {
    /// Asks the cluster for its metadata with the configured settings. Returns as soon as
    /// librdkafka reports an authentication or TLS failure. While nothing answers it keeps
    /// trying — up to `within` when given (`intake config --check`), else for as long as it
    /// takes, with a warning every 10 s (a stage started while its broker restarts waits
    /// for it). Blocking: call it from a blocking thread.
    ///
    /// # Errors
    /// A [`ConnectError`] naming the setting at fault (`kafka.brokers` when nothing answered).
    pub fn check_connection(&self, within: Option<Duration>) -> Result<Reached, ConnectError> {
        use rdkafka::consumer::Consumer;
        let fail = |field: &str, reason: String| ConnectError {
            brokers: self.brokers().to_owned(),
            field: field.to_owned(),
            reason,
        };
        let mechanism = self
            .cfg
            .sasl
            .as_ref()
            .filter(|_| self.cfg.security_protocol.sasl())
            .map(|s| s.mechanism);
        let mut c = self.base("check");
        c.set(
            "group.id",
            format!("{}-check-unused", self.cfg.group_prefix),
        )
        .set("enable.auto.commit", "false");
        self.user(&mut c);
        let consumer: BaseConsumer<Recorder> =
            c.create_with_context(Recorder::default()).map_err(|e| {
                let reason = e.to_string();
                let field =
                    diagnose_for(mechanism, &[(reason.clone(), 1)]).map_or("kafka.tls", |(f, _)| f);
                fail(field, reason)
            })?;
        let started = Instant::now();
        let mut warned = Instant::now();
        loop {
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) => {
                    return Ok(Reached {
                        brokers: md.brokers().len(),
                        topics: md.topics().len(),
                    });
                }
                Err(e) => {
                    // Error and log events reach the context only when the client's queue is
                    // served, one event per call; nothing is subscribed, so no message comes.
                    for _ in 0..256 {
                        if consumer.poll(Duration::ZERO).is_none() {
                            break;
                        }
                    }
                    let reasons = consumer.context().reasons();
                    if let Some((field, reason)) = diagnose_for(mechanism, &reasons) {
                        return Err(fail(field, reason));
                    }
                    // The last three distinct reasons, newest last.
                    let last = if reasons.is_empty() {
                        e.to_string()
                    } else {
                        reasons[reasons.len().saturating_sub(3)..]
                            .iter()
                            .map(|(r, _)| r.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    if let Some(within) = within
                        && started.elapsed() >= within
                    {
                        return Err(fail(
                            "kafka.brokers",
                            format!("no answer within {within:?}: {last}"),
                        ));
                    }
                    if warned.elapsed() >= Duration::from_secs(10) {
                        warned = Instant::now();
                        tracing::warn!(
                            brokers = %self.brokers(),
                            waited_s = started.elapsed().as_secs(),
                            reason = %last,
                            "Kafka does not answer yet; still trying"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::diagnose;

    #[test]
    fn reasons_name_the_setting() {
        let cases = [
            (
                "sasl_ssl://127.0.0.1:9094/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
                "kafka.sasl.password",
            ),
            (
                "ssl://127.0.0.1:9095/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified",
                "kafka.tls.ca_file",
            ),
            (
                "SSL handshake failed: error:0A000415:SSL routines::sslv3 alert certificate expired",
                "kafka.tls.cert_file",
            ),
            (
                "ssl://127.0.0.1:9095/bootstrap: Receive failed: error:0A000416:SSL routines::sslv3 alert certificate unknown: SSL alert number 46",
                "kafka.tls.cert_file",
            ),
            (
                r#"Local: Authentication failure: Failed to acquire SASL OAUTHBEARER token: {"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}"#,
                "kafka.sasl.client_secret",
            ),
            (
                r#"Local: Authentication failure: Failed to acquire SASL OAUTHBEARER token: {"error":"invalid_scope","error_description":"Invalid scopes: nope"}"#,
                "kafka.sasl.scope",
            ),
            (
                "Local: Authentication failure: Failed to acquire SASL OAUTHBEARER token: Couldn't connect to server",
                "kafka.sasl.token_endpoint_url",
            ),
            (
                r#"Authentication (Local: Authentication failure): sasl_ssl://127.0.0.1:9094/bootstrap: SASL authentication error: {"status":"invalid_token"} (after 326ms in state AUTH_REQ)"#,
                "kafka.sasl.client_id",
            ),
        ];
        for (reason, field) in cases {
            assert_eq!(
                diagnose(&[(reason.to_owned(), 1)]).map(|(f, _)| f),
                Some(field),
                "{reason}"
            );
        }
        assert_eq!(diagnose(&[("Connection refused".to_owned(), 9)]), None);
        // A broker that shuts down can cut the first request: that is waited out, not an error.
        let cut = "Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration";
        assert_eq!(diagnose(&[(cut.to_owned(), 9)]), None);
        // A token the broker refuses is the OAuth client's, not a password.
        let refused = "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER";
        assert_eq!(
            super::diagnose_for(
                Some(crate::config::SaslMechanism::OAuthBearer),
                &[(refused.to_owned(), 1)]
            )
            .map(|(f, _)| f),
            Some("kafka.sasl.client_id")
        );
    }
}
