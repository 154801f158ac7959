//! How a source authenticates its requests: fixed credentials, sessions and OAuth 2.0.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, SecretRef, ensure, invalid};

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
    /// An API key in a query parameter of your choice (`?api_key=...`). The parameter is
    /// added when the request is sent, so request URLs in logs, headers and the DLQ never
    /// hold it.
    ApiKeyQuery {
        /// Query parameter name, e.g. `api_key`.
        param: String,
        /// The key.
        key: SecretRef,
    },
    /// OAuth 2.0: an access token from the provider's token endpoint, sent as
    /// `Authorization: Bearer`, refreshed before it expires (see `fetch::oauth`).
    Oauth2(OAuth2Config),
    /// A session token from a login request, renewed by logging in again after a 401 (see
    /// `fetch::session`).
    Session(super::session::SessionConfig),
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
    pub client_secret: Option<SecretRef>,
    /// How the client authenticates to the token endpoint: `basic` (HTTP basic, RFC 6749's
    /// default) or `post` (`client_id`/`client_secret` in the form body).
    #[serde(default)]
    pub client_auth: OAuth2ClientAuth,
    /// Scopes to ask for (space-separated), if any.
    pub scope: Option<String>,
    /// `refresh_token` grant: the first refresh token. Once the owner has rotated it, the
    /// newer one stored (encrypted) in the `<prefix>.tokens` topic wins, until this value
    /// changes (a re-authorisation).
    pub refresh_token: Option<SecretRef>,
    /// `refresh_token` grant: the key that encrypts the stored refresh token, 32 bytes as 64
    /// hex characters (`openssl rand -hex 32`). Every fetch process needs the same key.
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
        ensure(
            matches!(u.scheme(), "http" | "https"),
            format!("{at}.token_url"),
            "must be http or https",
        )?;
        ensure(
            !self.client_id.trim().is_empty(),
            format!("{at}.client_id"),
            "must not be empty",
        )?;
        let refresh_only = [
            ("refresh_token", self.refresh_token.is_some()),
            ("token_key", self.token_key.is_some()),
        ];
        match self.grant {
            OAuth2Grant::ClientCredentials => {
                ensure(
                    self.client_secret.is_some(),
                    format!("{at}.client_secret"),
                    "required for grant = \"client_credentials\"",
                )?;
                for (field, set) in refresh_only {
                    ensure(
                        !set,
                        format!("{at}.{field}"),
                        "only for grant = \"refresh_token\"",
                    )?;
                }
            }
            OAuth2Grant::RefreshToken => {
                for (field, set) in refresh_only {
                    ensure(
                        set,
                        format!("{at}.{field}"),
                        "required for grant = \"refresh_token\"",
                    )?;
                }
            }
        }
        ensure(
            !self.refresh_margin.is_zero(),
            format!("{at}.refresh_margin"),
            "must be longer than zero",
        )
    }
}
