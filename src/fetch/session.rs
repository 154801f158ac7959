//! Session auth (`auth = { kind = "session", ... }`): a login request whose answer yields a
//! token (by JSON pointer, from a header or a cookie), sent with every request of the source
//! (as a bearer token, a header or a cookie) until the API answers 401; then the request logs
//! in once more and is repeated once (`http::SourceClient::request`), and a second 401 pauses
//! the stream.
//!
//! One login at a time per source: concurrent streams that need a token wait for the one login
//! in flight, and a 401 drops the token only if it is still the one the request was sent with,
//! so a burst of 401s from one expired session logs in once. Credentials and tokens are
//! [`SecretString`]s: no log line, error or `Debug` output shows them; a refused login's error
//! carries the status and at most 200 bytes of the answer with every credential value
//! replaced by `[redacted]`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use url::Url;

use super::oauth::AuthError;
use crate::config::{
    ConfigError, LoginBody, SecretString, SessionConfig, SourceConfig, TokenPlace, invalid,
};

/// A source's session.
pub struct Session {
    http: reqwest::Client,
    login_url: Url,
    method: reqwest::Method,
    body: Option<LoginBody>,
    headers: BTreeMap<String, String>,
    credentials: BTreeMap<String, SecretString>,
    token_at: TokenPlace,
    send_as: TokenPlace,
    token: tokio::sync::Mutex<Option<SecretString>>,
    logins: AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("login_url", &self.login_url.as_str())
            .field("logins", &self.logins.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Replaces every `{name}` of `text` by the credential's value.
fn fill(text: &str, credentials: &BTreeMap<String, SecretString>) -> String {
    let mut out = text.to_owned();
    for (k, v) in credentials {
        out = out.replace(&format!("{{{k}}}"), v.expose());
    }
    out
}

fn fill_json(v: &serde_json::Value, c: &BTreeMap<String, SecretString>) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(fill(s, c)),
        serde_json::Value::Array(a) => a.iter().map(|x| fill_json(x, c)).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, x)| (k.clone(), fill_json(x, c)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other.clone(),
    }
}

impl Session {
    /// Resolves a source's session settings (`at`: `sources[0].auth`).
    ///
    /// # Errors
    /// A credential that cannot be resolved or a setting that does not parse, naming the field.
    pub fn new(
        cfg: &SessionConfig,
        src: &SourceConfig,
        at: &str,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let login_url = if cfg.login_url.starts_with('/') {
            let base = src.base_url.as_deref().unwrap_or_default();
            Url::parse(&format!("{}{}", base.trim_end_matches('/'), cfg.login_url))
        } else {
            Url::parse(&cfg.login_url)
        }
        .map_err(|e| invalid(format!("{at}.login_url"), e.to_string()))?;
        let credentials = cfg
            .credentials
            .iter()
            .map(|(k, r)| {
                r.resolve_field(format!("{at}.credentials.{k}"))
                    .map(|v| (k.clone(), v))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            http,
            login_url,
            method: if cfg.method == "GET" {
                reqwest::Method::GET
            } else {
                reqwest::Method::POST
            },
            body: cfg.body.clone(),
            headers: cfg.headers.clone(),
            credentials,
            token_at: cfg.token_place(at)?,
            send_as: cfg.send_place(at)?,
            token: tokio::sync::Mutex::new(None),
            logins: AtomicU64::new(0),
        })
    }

    /// Logins made so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The current token, logging in first if there is none.
    ///
    /// # Errors
    /// [`AuthError::Rejected`] when the API refuses the login (a 4xx: the stream pauses),
    /// [`AuthError::Unavailable`] when it cannot be reached or answers without a token.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref() {
            return Ok(t.clone());
        }
        let t = self.login().await?;
        *held = Some(t.clone());
        Ok(t)
    }

    /// The API refused `sent` (401): forget it, unless another request already replaced it.
    pub async fn rejected(&self, sent: &SecretString) {
        let mut held = self.token.lock().await;
        if held.as_ref() == Some(sent) {
            *held = None;
        }
    }

    /// The request with the token.
    pub fn apply(
        &self,
        req: reqwest::RequestBuilder,
        token: &SecretString,
    ) -> reqwest::RequestBuilder {
        match &self.send_as {
            TokenPlace::Bearer | TokenPlace::Pointer(_) => {
                req.header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            }
            TokenPlace::Header(h) => req.header(h.as_str(), token.expose()),
            TokenPlace::Cookie(c) => req.header(COOKIE, format!("{c}={}", token.expose())),
        }
    }

    /// The answer's text for an error: at most 200 bytes, credentials redacted.
    fn shown(&self, body: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        for v in self.credentials.values() {
            text = text.replace(v.expose(), "[redacted]");
        }
        text
    }

    async fn login(&self) -> Result<SecretString, AuthError> {
        let mut req = self
            .http
            .request(self.method.clone(), self.login_url.clone());
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), fill(v, &self.credentials));
        }
        req = match &self.body {
            None => req,
            Some(LoginBody::Json(v)) => req.json(&fill_json(v, &self.credentials)),
            Some(LoginBody::Form(f)) => {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in f {
                    ser.append_pair(k, &fill(v, &self.credentials));
                }
                req.header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(ser.finish())
            }
        };
        let n = self.logins.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(url = %self.login_url, login = n, "session: logging in");
        let resp = req.send().await.map_err(|e| {
            AuthError::Unavailable(format!("session login at {}: {e}", self.login_url))
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            AuthError::Unavailable(format!(
                "session login at {}: reading the answer: {e}",
                self.login_url
            ))
        })?;
        if status.is_client_error() {
            return Err(AuthError::Rejected {
                grant: "session login",
                error: format!("HTTP {}", status.as_u16()),
                description: Some(self.shown(&body)),
            });
        }
        if !status.is_success() {
            return Err(AuthError::Unavailable(format!(
                "session login at {} answered HTTP {}",
                self.login_url,
                status.as_u16()
            )));
        }
        let token = match &self.token_at {
            TokenPlace::Pointer(p) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.pointer(p).and_then(|t| t.as_str().map(str::to_owned))),
            TokenPlace::Header(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            TokenPlace::Cookie(c) => headers.get_all(SET_COOKIE).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                let first = v.split(';').next()?.trim();
                let (name, value) = first.split_once('=')?;
                (name == c).then(|| value.to_owned())
            }),
            TokenPlace::Bearer => None,
        }
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            let place = match &self.token_at {
                TokenPlace::Pointer(p) => format!("at {p}"),
                TokenPlace::Header(h) => format!("in header {h}"),
                TokenPlace::Cookie(c) => format!("in cookie {c}"),
                TokenPlace::Bearer => String::new(),
            };
            AuthError::Unavailable(format!(
                "session login at {} answered without a token {place}",
                self.login_url
            ))
        })?;
        Ok(SecretString::new(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_take_the_credentials_and_debug_shows_none() {
        let c: BTreeMap<String, SecretString> = [
            ("username".to_owned(), SecretString::new("ada")),
            ("password".to_owned(), SecretString::new("hunter2")),
        ]
        .into();
        let v = serde_json::json!({"auth": {"user": "{username}", "pass": "{password}"}, "n": 1});
        assert_eq!(
            fill_json(&v, &c),
            serde_json::json!({"auth": {"user": "ada", "pass": "hunter2"}, "n": 1})
        );
        let cfg: crate::config::Config = crate::config::Config::from_toml(
            r#"
[kafka]
brokers = "x:9092"
[[sources]]
name = "s"
base_url = "http://127.0.0.1:1"
auth = { kind = "session", login_url = "/v1/login", body = { form = { u = "{username}", p = "{password}" } }, credentials = { username = "ada", password = "hunter2" }, token = "cookie:sid", send_as = "header:X-Session" }
"#,
        )
        .unwrap();
        let Some(crate::config::Auth::Session(sc)) = &cfg.sources[0].auth else {
            panic!("session")
        };
        let s = Session::new(
            sc,
            &cfg.sources[0],
            "sources[0].auth",
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(s.login_url.as_str(), "http://127.0.0.1:1/v1/login");
        let shown = format!("{s:?} {cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            s.shown(b"bad password hunter2 for ada"),
            "bad password [redacted] for [redacted]"
        );
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        for (auth, field) in [
            (
                r#"{ kind = "session", login_url = "/login", token = "token" }"#,
                "sources[0].auth.token",
            ),
            (
                r#"{ kind = "session", login_url = "/login", token = "/t", send_as = "query" }"#,
                "sources[0].auth.send_as",
            ),
            (
                r#"{ kind = "session", login_url = "ftp://x/login", token = "/t" }"#,
                "sources[0].auth.login_url",
            ),
            (
                r#"{ kind = "session", login_url = "/login", token = "/t", method = "PUT" }"#,
                "sources[0].auth.method",
            ),
            (
                r#"{ kind = "session", login_url = "/login", token = "/t", body = { json = { p = "{pw}" } } }"#,
                "sources[0].auth.body",
            ),
        ] {
            let text = format!(
                "[kafka]\nbrokers = \"x:9092\"\n[[sources]]\nname = \"s\"\nbase_url = \"http://h\"\nauth = {auth}\n"
            );
            let err = crate::config::Config::from_toml(&text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{auth}: {err}");
        }
    }
}
