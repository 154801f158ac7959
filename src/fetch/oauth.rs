//! OAuth 2.0 access tokens for sources (`auth = { kind = "oauth2", ... }`), with fenced
//! rotation of single-use refresh tokens.
//!
//! - **Grants**: `client_credentials` (the client's own token) and `refresh_token` (a user's
//!   delegated token). An access token is fetched on first use and refreshed once less than
//!   `refresh_margin` (at most half its lifetime) is left. A 401 from the upstream drops the
//!   token it was sent with; the request is repeated once with a fresh one (see
//!   `http::SourceClient`), and a second 401 pauses the stream with the reason.
//! - **One refresher per token**: a token belongs to the fetch process that owns its partition
//!   of `intake.quota` (see `fetch::ownership`). Only that process, while it owns it, refreshes
//!   ([`OAuth2::arm`] on assignment, [`OAuth2::disarm`] on revocation).
//! - **Rotation is committed**: providers that rotate refresh tokens (Keycloak's "revoke
//!   refresh token", Salesforce, Xero, QuickBooks) burn the old one at each refresh. The owner
//!   commits the new one to `<prefix>.tokens` (compacted, partitioned like `intake.quota`, key =
//!   token id) in a Kafka transaction of the partition's fenced writer
//!   (`QuotaStore::write_to`), sealed with XChaCha20-Poly1305 under `token_key` (the token id
//!   is the associated data, so a record cannot be moved to another token). The next owner
//!   reads the partition to its end (read-committed) after fencing the previous writer, so it
//!   continues with the newest refresh token.
//! - **Fencing**: before each refresh the owner proves in a transaction that it still owns the
//!   partition; a writer that a newer owner fenced gets an error, drops every token it holds
//!   and refuses to hand one out ([`AuthError::Fenced`]): a former owner can neither use nor
//!   write a token. The one loss left is a crash (or a fencing) in the milliseconds between the
//!   provider's answer and the commit: the rotated token is then gone and the next refresh gets
//!   `invalid_grant` — the stream pauses with that reason and a new refresh token must be put
//!   in the config (a changed `refresh_token` wins over the stored one).
//! - **First refresh token**: from the config (`refresh_token`); afterwards the stored one,
//!   which carries the fingerprint (SHA-256, sealed with it) of the config value it descends
//!   from: when the config's value changes, the config wins again.
//!
//! Secrets (client secret, refresh and access tokens, the key) live in [`SecretString`] and
//! never reach a log line, an error message or a topic in clear.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::time::Instant;

use crate::config::{
    ConfigError, OAuth2ClientAuth, OAuth2Config, OAuth2Grant, SecretString, invalid,
};
use crate::quota::QuotaStore;

/// Why no access token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The provider refused (`invalid_grant`, `invalid_client`, ...): retrying the same
    /// credentials cannot help; the stream pauses with this reason.
    #[error("oauth2 token endpoint refused the {grant} grant: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        /// The grant.
        grant: &'static str,
        /// The OAuth error code (`invalid_grant`).
        error: String,
        /// The provider's description.
        description: Option<String>,
    },
    /// The provider or Kafka could not be reached, or answered garbage: retried later.
    #[error("oauth2: {0}")]
    Unavailable(String),
    /// This process does not own the token (now): only the owner refreshes.
    #[error("oauth2: this process does not own token `{0}`; its owner refreshes it")]
    NotOwner(String),
    /// A newer owner fenced this process: its tokens are dropped.
    #[error("oauth2: token `{0}` was taken over by a newer owner; this process dropped it")]
    Fenced(String),
}

/// The record of a token in `<prefix>.tokens` (JSON). Nothing in it is secret: the refresh
/// token is only in `sealed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Token id (also the key).
    pub token: String,
    /// `client_credentials` or `refresh_token`.
    pub grant: String,
    /// The process that wrote it.
    pub owner: String,
    /// Refresh tokens rotated so far under this owner line (grows by one per rotation).
    pub rotations: u64,
    /// When it was written (unix ms).
    pub updated_at: i64,
    /// When the last access token expires (unix ms), if one was fetched.
    #[serde(default)]
    pub access_expires_at: Option<i64>,
    /// Why the token's streams are paused (a refused grant, a 401 with a fresh token).
    #[serde(default)]
    pub paused: Option<String>,
    /// The refresh token, sealed (refresh_token grant only).
    #[serde(default)]
    pub sealed: Option<Sealed>,
}

/// A sealed secret: XChaCha20-Poly1305, random 24-byte nonce, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Always `xchacha20poly1305`.
    pub alg: String,
    /// The nonce (base64).
    pub nonce: String,
    /// Ciphertext with tag (base64).
    pub ciphertext: String,
}

impl TokenKey {
    /// The refresh token sealed in `rec`, if this key opens it (operators' recovery, tests).
    pub fn open_refresh_token(&self, rec: &TokenRecord) -> Option<SecretString> {
        let bytes = self.open(&rec.token, rec.sealed.as_ref()?)?;
        let p: Plain = serde_json::from_slice(&bytes).ok()?;
        Some(SecretString::new(p.refresh_token))
    }
}

/// What is sealed: the refresh token and the fingerprint of the config value it descends from.
#[derive(Serialize, Deserialize)]
struct Plain {
    refresh_token: String,
    seed: String,
}

/// The key that seals refresh tokens.
#[derive(Clone)]
pub struct TokenKey(XChaCha20Poly1305);

impl TokenKey {
    /// A key from 64 hex characters (32 bytes).
    ///
    /// # Errors
    /// When the value is not 64 hex characters, naming `field`.
    pub fn parse(value: &SecretString, field: &str) -> Result<Self, ConfigError> {
        let bytes = hex::decode(value.expose().trim())
            .ok()
            .filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            return Err(invalid(
                field,
                "must be 32 bytes written as 64 hex characters (openssl rand -hex 32)",
            ));
        };
        Ok(Self(
            XChaCha20Poly1305::new_from_slice(&bytes).expect("32-byte key"),
        ))
    }

    fn aad(token: &str) -> Vec<u8> {
        format!("intake.tokens/v1/{token}").into_bytes()
    }

    /// Seals `plain` for token `token`.
    fn seal(&self, token: &str, plain: &[u8]) -> Sealed {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &Self::aad(token),
                },
            )
            .expect("encryption of a small buffer cannot fail");
        Sealed {
            alg: "xchacha20poly1305".into(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        }
    }

    /// Opens a sealed value of token `token`; None when it was sealed with another key, for
    /// another token, or altered.
    fn open(&self, token: &str, s: &Sealed) -> Option<Vec<u8>> {
        if s.alg != "xchacha20poly1305" {
            return None;
        }
        let nonce = B64.decode(&s.nonce).ok().filter(|n| n.len() == 24)?;
        let ct = B64.decode(&s.ciphertext).ok()?;
        self.0
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &Self::aad(token),
                },
            )
            .ok()
    }
}

fn fingerprint(s: &SecretString) -> String {
    hex::encode(sha2::Sha256::digest(s.expose().as_bytes()))
}

fn unix_ms_now() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Where the owner commits its token records: the partition's fenced writer.
#[derive(Clone)]
pub struct TokenSink {
    /// The quota partition's state store (its transactional producer fences former owners).
    pub store: QuotaStore,
    /// `<prefix>.tokens`.
    pub topic: String,
    /// This process (`instance_id`).
    pub owner: String,
}

impl TokenSink {
    async fn write(&self, rec: &TokenRecord) -> Result<(), rdkafka::error::KafkaError> {
        let store = self.store.clone();
        let topic = self.topic.clone();
        let key = rec.token.clone();
        let value = serde_json::to_vec(rec).expect("serialisable");
        tokio::task::spawn_blocking(move || store.write_to(&topic, &[(key.as_str(), value)]))
            .await
            .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
    }

    /// The latest committed record of every token in the partition. Blocking.
    ///
    /// # Errors
    /// The Kafka error.
    pub fn read(
        &self,
    ) -> rdkafka::error::KafkaResult<std::collections::HashMap<String, TokenRecord>> {
        self.store.read_latest(&self.topic, "tokens")
    }
}

struct Access {
    token: SecretString,
    /// Refresh from then on.
    refresh_at: Instant,
    expires_at_ms: i64,
}

enum Ownership {
    /// Not (or no longer) the owner: no refresh.
    NotOwner,
    /// The owner, committing through the sink (None: `client_credentials` without storage).
    Owner(Option<std::sync::Arc<TokenSink>>),
    /// Fenced by a newer owner: nothing is handed out until the next assignment.
    Fenced,
}

struct State {
    ownership: Ownership,
    access: Option<Access>,
    refresh: Option<SecretString>,
    /// Fingerprint of the config refresh token the current one descends from.
    seed: String,
    rotations: u64,
    /// A rotated refresh token that is not committed yet (the commit failed, not fenced).
    unsaved: bool,
    /// A refused grant: the streams stay paused until the next assignment.
    refused: Option<AuthError>,
}

/// The OAuth 2.0 token of one token id, shared by every stream (and source) that uses it.
pub struct OAuth2 {
    token_id: String,
    at: String,
    cfg: OAuth2Config,
    client_secret: Option<SecretString>,
    /// The config's refresh token (refresh_token grant).
    seed: Option<SecretString>,
    key: Option<TokenKey>,
    http: reqwest::Client,
    /// Held across a refresh, so one refresh runs at a time (single flight).
    state: tokio::sync::Mutex<State>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_id", &self.token_id)
            .field("grant", &self.cfg.grant)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Lifetime assumed when the provider announces none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

impl OAuth2 {
    /// Resolves the secrets of `cfg` (configured at `at`, e.g. `sources[0].auth`) for token
    /// `token_id`.
    ///
    /// # Errors
    /// A secret that cannot be resolved or a malformed key, naming the field.
    pub fn new(cfg: &OAuth2Config, token_id: &str, at: &str) -> Result<Self, ConfigError> {
        let client_secret = cfg
            .client_secret
            .as_ref()
            .map(|s| s.resolve_field(format!("{at}.client_secret")))
            .transpose()?;
        let seed = cfg
            .refresh_token
            .as_ref()
            .map(|s| s.resolve_field(format!("{at}.refresh_token")))
            .transpose()?;
        let key = cfg
            .token_key
            .as_ref()
            .map(|s| {
                let field = format!("{at}.token_key");
                TokenKey::parse(&s.resolve_field(&field)?, &field)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("intake/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("{at}.token_url"), e.to_string()))?;
        let ownership = match cfg.grant {
            // A client's own token needs no hand-over: any process may fetch one.
            OAuth2Grant::ClientCredentials => Ownership::Owner(None),
            OAuth2Grant::RefreshToken => Ownership::NotOwner,
        };
        Ok(Self {
            token_id: token_id.to_owned(),
            at: at.to_owned(),
            cfg: cfg.clone(),
            client_secret,
            seed,
            key,
            http,
            state: tokio::sync::Mutex::new(State {
                ownership,
                access: None,
                refresh: None,
                seed: String::new(),
                rotations: 0,
                unsaved: false,
                refused: None,
            }),
        })
    }

    /// The token id.
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// Whether this token must be owned (and stored) to be refreshed.
    pub fn needs_owner(&self) -> bool {
        self.cfg.grant == OAuth2Grant::RefreshToken
    }

    fn grant_name(&self) -> &'static str {
        match self.cfg.grant {
            OAuth2Grant::ClientCredentials => "client_credentials",
            OAuth2Grant::RefreshToken => "refresh_token",
        }
    }

    /// Makes this process the token's owner, committing through `sink`, starting from the
    /// stored record `stored` (the partition was read to its end after fencing the previous
    /// writer) or, without one or when the config's refresh token changed, from the config.
    pub async fn arm(&self, sink: TokenSink, stored: Option<&TokenRecord>) {
        let mut st = self.state.lock().await;
        st.access = None;
        st.unsaved = false;
        st.refused = None;
        st.rotations = stored.map_or(0, |r| r.rotations);
        if let (Some(seed), Some(key)) = (&self.seed, &self.key) {
            let seed_print = fingerprint(seed);
            let from_store = stored
                .and_then(|r| r.sealed.as_ref())
                .map(|s| key.open(&self.token_id, s));
            match from_store {
                Some(Some(bytes)) => match serde_json::from_slice::<Plain>(&bytes) {
                    Ok(p) if p.seed == seed_print => {
                        tracing::info!(token = %self.token_id, rotations = st.rotations, "oauth2: continuing with the stored refresh token");
                        st.refresh = Some(SecretString::new(p.refresh_token));
                    }
                    Ok(_) => {
                        tracing::info!(token = %self.token_id, "oauth2: the configured refresh token changed; it replaces the stored one");
                        st.refresh = Some(seed.clone());
                        st.rotations = 0;
                    }
                    Err(_) => {
                        st.refresh = None;
                        st.refused = Some(AuthError::Unavailable(format!(
                            "the stored refresh token of `{}` is unreadable",
                            self.token_id
                        )));
                    }
                },
                Some(None) => {
                    st.refresh = None;
                    st.refused = Some(AuthError::Unavailable(format!(
                        "the stored refresh token of `{}` cannot be opened with {}.token_key (was the key changed?)",
                        self.token_id, self.at
                    )));
                }
                None => {
                    tracing::info!(token = %self.token_id, "oauth2: no stored refresh token; starting from the configured one");
                    st.refresh = Some(seed.clone());
                }
            }
            st.seed = seed_print;
        }
        st.ownership = Ownership::Owner(Some(std::sync::Arc::new(sink)));
    }

    /// Gives the token up (its partition was revoked): drops every token held.
    pub async fn disarm(&self) {
        let mut st = self.state.lock().await;
        if self.needs_owner() {
            st.ownership = Ownership::NotOwner;
        } else {
            st.ownership = Ownership::Owner(None);
        }
        st.access = None;
        st.refresh = None;
    }

    /// A newer owner fenced this process: drops every token held and hands none out.
    pub async fn fenced(&self) {
        let mut st = self.state.lock().await;
        Self::drop_fenced(&mut st);
        tracing::warn!(token = %self.token_id, "oauth2: fenced by a newer owner; tokens dropped");
    }

    fn drop_fenced(st: &mut State) {
        st.ownership = Ownership::Fenced;
        st.access = None;
        st.refresh = None;
    }

    /// An access token valid for at least the refresh margin (refreshing it first if not).
    ///
    /// # Errors
    /// [`AuthError`].
    pub async fn bearer(&self) -> Result<SecretString, AuthError> {
        let mut st = self.state.lock().await;
        match &st.ownership {
            Ownership::NotOwner => return Err(AuthError::NotOwner(self.token_id.clone())),
            Ownership::Fenced => return Err(AuthError::Fenced(self.token_id.clone())),
            Ownership::Owner(_) => {}
        }
        if let Some(e) = &st.refused {
            return Err(e.clone());
        }
        if let Some(a) = &st.access
            && Instant::now() < a.refresh_at
        {
            return Ok(a.token.clone());
        }
        self.refresh(&mut st).await
    }

    /// The upstream answered 401 to `sent`: drop it, so the next [`OAuth2::bearer`] fetches a
    /// new one (unless another request already did).
    pub async fn rejected(&self, sent: &SecretString) {
        let mut st = self.state.lock().await;
        if st.access.as_ref().is_some_and(|a| &a.token == sent) {
            st.access = None;
        }
    }

    /// Records why the token's streams pause (shown by `intake status`), when this process
    /// owns a stored token.
    pub async fn paused(&self, reason: &str) {
        let st = self.state.lock().await;
        if let Ownership::Owner(Some(sink)) = &st.ownership {
            let rec = self.record(&st, sink, Some(reason.to_owned()));
            if let Err(e) = sink.write(&rec).await {
                tracing::warn!(token = %self.token_id, error = %e, "oauth2: could not record the pause");
            }
        }
    }

    fn record(&self, st: &State, sink: &TokenSink, paused: Option<String>) -> TokenRecord {
        let sealed = match (&self.key, &st.refresh) {
            (Some(key), Some(rt)) => {
                let plain = serde_json::to_vec(&Plain {
                    refresh_token: rt.expose().to_owned(),
                    seed: st.seed.clone(),
                })
                .expect("serialisable");
                Some(key.seal(&self.token_id, &plain))
            }
            _ => None,
        };
        TokenRecord {
            token: self.token_id.clone(),
            grant: self.grant_name().into(),
            owner: sink.owner.clone(),
            rotations: st.rotations,
            updated_at: unix_ms_now(),
            access_expires_at: st.access.as_ref().map(|a| a.expires_at_ms),
            paused,
            sealed,
        }
    }

    /// Commits the state; a fenced writer drops everything.
    async fn commit(&self, st: &mut State, sink: &TokenSink) -> Result<(), AuthError> {
        let rec = self.record(st, sink, None);
        match sink.write(&rec).await {
            Ok(()) => Ok(()),
            Err(e) if crate::kafka::classify(&e) == crate::kafka::ErrorClass::Fatal => {
                tracing::warn!(token = %self.token_id, error = %e, "oauth2: fenced by a newer owner; tokens dropped");
                Self::drop_fenced(st);
                Err(AuthError::Fenced(self.token_id.clone()))
            }
            Err(e) => Err(AuthError::Unavailable(format!(
                "storing the token state of `{}` failed: {e}",
                self.token_id
            ))),
        }
    }

    async fn refresh(&self, st: &mut State) -> Result<SecretString, AuthError> {
        let sink = match &st.ownership {
            Ownership::Owner(s) => s.clone(),
            Ownership::NotOwner => return Err(AuthError::NotOwner(self.token_id.clone())),
            Ownership::Fenced => return Err(AuthError::Fenced(self.token_id.clone())),
        };
        let rotating = self.cfg.grant == OAuth2Grant::RefreshToken;
        if rotating {
            let Some(sink) = &sink else {
                return Err(AuthError::NotOwner(self.token_id.clone()));
            };
            // Never spend a refresh token that is not committed, and prove ownership (a fenced
            // writer fails here) before the provider burns the current one.
            self.commit(st, sink).await?;
            st.unsaved = false;
        }
        // The form is built in a block of its own: its serializer must not live across an await.
        let (body, req) = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            match self.cfg.grant {
                OAuth2Grant::ClientCredentials => {
                    form.append_pair("grant_type", "client_credentials");
                }
                OAuth2Grant::RefreshToken => {
                    let rt = st.refresh.as_ref().ok_or_else(|| {
                        AuthError::Unavailable(format!("no refresh token for `{}`", self.token_id))
                    })?;
                    form.append_pair("grant_type", "refresh_token");
                    form.append_pair("refresh_token", rt.expose());
                }
            }
            if let Some(scope) = &self.cfg.scope {
                form.append_pair("scope", scope);
            }
            let mut req = self.http.post(&self.cfg.token_url).header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            match (self.cfg.client_auth, &self.client_secret) {
                (OAuth2ClientAuth::Basic, Some(secret)) => {
                    // RFC 6749 §2.3.1: both parts form-encoded before the basic encoding.
                    let enc = |s: &str| {
                        url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                    };
                    req = req.basic_auth(enc(&self.cfg.client_id), Some(enc(secret.expose())));
                }
                (OAuth2ClientAuth::Post, Some(secret)) => {
                    form.append_pair("client_id", &self.cfg.client_id);
                    form.append_pair("client_secret", secret.expose());
                }
                (_, None) => {
                    form.append_pair("client_id", &self.cfg.client_id);
                }
            }
            (form.finish(), req)
        };
        let started = Instant::now();
        let sent = req.body(body).send().await;
        let resp = sent.map_err(|e| {
            AuthError::Unavailable(format!(
                "token endpoint {}: {}",
                self.cfg.token_url,
                super::http::describe(&e)
            ))
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            AuthError::Unavailable(format!(
                "token endpoint {}: {}",
                self.cfg.token_url,
                super::http::describe(&e)
            ))
        })?;
        if !status.is_success() {
            if let Ok(err) = serde_json::from_slice::<ErrorResponse>(&body)
                && (400..500).contains(&status.as_u16())
            {
                let e = AuthError::Rejected {
                    grant: self.grant_name(),
                    error: err.error,
                    description: err.error_description,
                };
                tracing::error!(token = %self.token_id, status = status.as_u16(), error = %e, "oauth2: the provider refused the grant; the token's streams pause");
                st.access = None;
                if rotating {
                    // The refresh token is spent or revoked: no retry can help.
                    st.refused = Some(e.clone());
                    if let Some(sink) = &sink {
                        let rec = self.record(st, sink, Some(e.to_string()));
                        let _ = sink.write(&rec).await;
                    }
                }
                return Err(e);
            }
            return Err(AuthError::Unavailable(format!(
                "token endpoint {} answered {status}",
                self.cfg.token_url
            )));
        }
        let tr: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            AuthError::Unavailable(format!(
                "token endpoint {} answered {status} without a token: {e}",
                self.cfg.token_url
            ))
        })?;
        let lifetime = tr
            .expires_in
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_LIFETIME, |s| Duration::from_secs_f64(s.min(1.0e7)));
        let margin = self.cfg.refresh_margin.min(lifetime / 2);
        let expires_at_ms = unix_ms_now() + i64::try_from(lifetime.as_millis()).unwrap_or(0);
        let access = SecretString::new(tr.access_token);
        st.access = Some(Access {
            token: access.clone(),
            refresh_at: started + lifetime - margin,
            expires_at_ms,
        });
        metrics::counter!(crate::telemetry::metric::FETCH_OAUTH_REFRESHES, "grant" => self.grant_name()).increment(1);
        if rotating
            && let Some(new_rt) = tr.refresh_token
            && st.refresh.as_ref().is_none_or(|old| old.expose() != new_rt)
        {
            st.refresh = Some(SecretString::new(new_rt));
            st.rotations += 1;
            st.unsaved = true;
            let sink = sink.expect("a rotating token has a sink");
            match self.commit(st, &sink).await {
                Ok(()) => {
                    st.unsaved = false;
                    tracing::info!(token = %self.token_id, rotations = st.rotations, lifetime_s = lifetime.as_secs(), "oauth2: refresh token rotated and committed");
                }
                Err(e @ AuthError::Fenced(_)) => return Err(e),
                Err(e) => {
                    // Kept in memory; committed before it is spent (the next refresh's first
                    // step), and the stream goes on meanwhile.
                    tracing::warn!(token = %self.token_id, error = %e, "oauth2: the rotated refresh token is not committed yet; retried before the next refresh");
                }
            }
        } else {
            tracing::info!(token = %self.token_id, grant = self.grant_name(), lifetime_s = lifetime.as_secs(), "oauth2: access token fetched");
        }
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::parse(&SecretString::new("11".repeat(32)), "k").unwrap()
    }

    #[test]
    fn sealing_round_trips_and_binds_the_token_id() {
        let k = key();
        let s = k.seal("tok-a", b"refresh-secret-value");
        assert!(!s.ciphertext.contains("refresh-secret-value"));
        let raw = B64.decode(&s.ciphertext).unwrap();
        assert!(
            !raw.windows(b"refresh".len()).any(|w| w == b"refresh"),
            "ciphertext holds the plaintext"
        );
        assert_eq!(k.open("tok-a", &s).unwrap(), b"refresh-secret-value");
        assert!(k.open("tok-b", &s).is_none(), "moved to another token");
        let other = TokenKey::parse(&SecretString::new("22".repeat(32)), "k").unwrap();
        assert!(other.open("tok-a", &s).is_none(), "another key");
        let mut tampered = s.clone();
        let mut ct = B64.decode(&tampered.ciphertext).unwrap();
        ct[0] ^= 1;
        tampered.ciphertext = B64.encode(ct);
        assert!(k.open("tok-a", &tampered).is_none(), "altered");
        // Two seals of one value differ (random nonces).
        assert_ne!(
            k.seal("tok-a", b"x").ciphertext,
            k.seal("tok-a", b"x").ciphertext
        );
    }

    #[test]
    fn a_key_must_be_32_hex_bytes() {
        for bad in ["abc", &"zz".repeat(32), &"11".repeat(31)] {
            let e = TokenKey::parse(&SecretString::new(bad), "sources[0].auth.token_key")
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("sources[0].auth.token_key"), "{e}");
            assert!(!e.contains(bad) || bad.len() < 4, "{e}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let cfg: OAuth2Config = toml::from_str(
            r#"
token_url = "http://127.0.0.1:1/token"
grant = "refresh_token"
client_id = "c"
client_secret = "client-secret-xyz"
refresh_token = "refresh-secret-xyz"
token_key = "3333333333333333333333333333333333333333333333333333333333333333"
"#,
        )
        .unwrap();
        let o = OAuth2::new(&cfg, "tok", "sources[0].auth").unwrap();
        let shown = format!("{o:?} {cfg:?}");
        for s in ["client-secret-xyz", "refresh-secret-xyz", "3333333333"] {
            assert!(!shown.contains(s), "{shown}");
        }
    }

    #[test]
    fn reads_and_writes_the_stored_json() {
        let full = r#"{"token":"t1","grant":"refresh_token","owner":"p1","rotations":2,"updated_at":1767225600000,"access_expires_at":1767229200000,"paused":"invalid_grant","sealed":{"alg":"xchacha20poly1305","nonce":"bm9uY2U=","ciphertext":"Y2lwaGVy"}}"#;
        crate::contract::assert_record_json::<TokenRecord>(full, full);
        crate::contract::assert_record_json::<TokenRecord>(
            r#"{"token":"t1","grant":"client_credentials","owner":"p1","rotations":0,"updated_at":1767225600000}"#,
            r#"{"token":"t1","grant":"client_credentials","owner":"p1","rotations":0,"updated_at":1767225600000,"access_expires_at":null,"paused":null,"sealed":null}"#,
        );
    }
}
