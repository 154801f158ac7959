//! `--oidc-issuer`: the simulator accepts only access tokens that the issuer signed.
//!
//! A bearer token must be a JWT whose signature verifies with a key of the issuer's JWKS
//! (found through `<issuer>/.well-known/openid-configuration`), whose `iss` is the issuer and
//! which has not expired (no leeway). Accepted requests count against the quota of
//! `--oidc-quota-token`. The key set is fetched on the first request and again when a token
//! names a key id it does not hold (at most once every 10 s), so a key rotation is followed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

/// Signature algorithms accepted (the issuer's keys are public keys).
const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Least time between two key set fetches.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// The issuer's keys and how to check its tokens.
pub struct Oidc {
    issuer: String,
    /// The quota token accepted requests count against.
    pub quota_token: String,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

/// The claims the simulator reads.
#[derive(Debug, Deserialize)]
pub struct Claims {
    /// Who the token was issued to (`azp`), when present.
    #[serde(default)]
    pub azp: Option<String>,
}

impl Oidc {
    /// A checker for tokens of `issuer` (no trailing `/`).
    pub fn new(issuer: &str, quota_token: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            quota_token: quota_token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            keys: Mutex::new(Keys::default()),
        }
    }

    /// The JSON document at `url`; an error worded `failed: …` when the request fails or
    /// answers an error status, `unreadable: …` when the body is not the document.
    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        failed: &str,
        unreadable: &str,
    ) -> Result<T, String> {
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("{failed}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{unreadable}: {e}"))
    }

    async fn fetch(&self, keys: &mut Keys) -> Result<(), String> {
        keys.fetched = Some(Instant::now());
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let disc: Discovery = self
            .get_json(
                &url,
                "issuer discovery failed",
                "issuer discovery unreadable",
            )
            .await?;
        let set: JwkSet = self
            .get_json(&disc.jwks_uri, "JWKS fetch failed", "JWKS unreadable")
            .await?;
        keys.by_kid.clear();
        for k in &set.keys {
            if matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let (Some(kid), Ok(dk)) = (k.common.key_id.clone(), DecodingKey::from_jwk(k)) else {
                continue;
            };
            keys.by_kid.insert(kid, dk);
        }
        Ok(())
    }

    /// Checks a bearer token; the reason when refused.
    ///
    /// # Errors
    /// Why the token is refused (never the token itself).
    pub async fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "not a JWT".to_owned())?;
        let kid = header.kid.ok_or("the JWT names no key id")?;
        let mut keys = self.keys.lock().await;
        if !keys.by_kid.contains_key(&kid)
            && keys.fetched.is_none_or(|t| t.elapsed() >= REFETCH_EVERY)
        {
            self.fetch(&mut keys).await?;
        }
        let key = keys
            .by_kid
            .get(&kid)
            .ok_or("signed with a key the issuer does not publish")?;
        // Public-key signatures only: an HMAC "signature" keyed with a public key proves nothing.
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.validate_aud = false;
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "iss"]);
        jsonwebtoken::decode::<Claims>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| format!("access token refused: {e}"))
    }
}
