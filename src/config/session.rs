//! `auth = { kind = "session", ... }`: a login request whose answer yields a session token,
//! sent with every request and renewed by logging in again after a 401 (see `fetch::session`).
//!
//! ```toml
//! auth = { kind = "session", login_url = "/v1/login", body = { json = { user = "{username}", password = "{password}" } },
//!          credentials = { username = "intake", password = { env = "API_PASSWORD" } },
//!          token = "/session/token", send_as = "bearer" }
//! ```
//!
//! The credentials are secret references; their values go into the login body through
//! `{name}` placeholders and appear nowhere else (not in logs, `Debug` or errors).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, SecretRef, invalid};

/// `auth = { kind = "session", ... }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Where to log in: an absolute URL, or a path below the source's `base_url`.
    pub login_url: String,
    /// `POST` (default) or `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The login body (`json` or `form`); `{name}` placeholders take the credential `name`.
    pub body: Option<LoginBody>,
    /// Extra headers of the login request (placeholders allowed).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The secrets the placeholders name (`{ username = "u", password = { env = "PW" } }`).
    #[serde(default)]
    pub credentials: BTreeMap<String, SecretRef>,
    /// Where the token is in the login answer: a JSON pointer (`/session/token`),
    /// `header:<name>` or `cookie:<name>`.
    pub token: String,
    /// How requests carry it: `bearer` (`Authorization: Bearer`), `header:<name>` or
    /// `cookie:<name>`.
    #[serde(default = "default_send_as")]
    pub send_as: String,
}

/// A login body.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LoginBody {
    /// A JSON document (`Content-Type: application/json`).
    Json(serde_json::Value),
    /// Form fields (`application/x-www-form-urlencoded`).
    Form(BTreeMap<String, String>),
}

string_defaults! {
    fn default_method = "POST";
    fn default_send_as = "bearer";
}

/// Where the token is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenPlace {
    /// A JSON pointer into the login answer.
    Pointer(String),
    /// `Authorization: Bearer`.
    Bearer,
    /// A header.
    Header(String),
    /// A cookie.
    Cookie(String),
}

fn header_name(field: &str, h: &str) -> Result<String, ConfigError> {
    if h.is_empty() || reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
        return Err(invalid(field, format!("`{h}` is not a valid header name")));
    }
    Ok(h.to_owned())
}

fn cookie_name(field: &str, c: &str) -> Result<String, ConfigError> {
    let ok = !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(c.to_owned())
    } else {
        Err(invalid(field, format!("`{c}` is not a cookie name")))
    }
}

/// Every string in a JSON document (the values placeholders can be in).
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

impl SessionConfig {
    /// Where the login answer holds the token.
    ///
    /// # Errors
    /// Naming `{at}.token`.
    pub fn token_place(&self, at: &str) -> Result<TokenPlace, ConfigError> {
        let field = format!("{at}.token");
        let t = &self.token;
        if let Some(h) = t.strip_prefix("header:") {
            Ok(TokenPlace::Header(header_name(&field, h)?))
        } else if let Some(c) = t.strip_prefix("cookie:") {
            Ok(TokenPlace::Cookie(cookie_name(&field, c)?))
        } else if t.starts_with('/') {
            Ok(TokenPlace::Pointer(t.clone()))
        } else {
            Err(invalid(
                field,
                format!("`{t}` is not a JSON pointer, header:<name> or cookie:<name>"),
            ))
        }
    }

    /// How requests carry the token.
    ///
    /// # Errors
    /// Naming `{at}.send_as`.
    pub fn send_place(&self, at: &str) -> Result<TokenPlace, ConfigError> {
        let field = format!("{at}.send_as");
        let s = &self.send_as;
        if s == "bearer" {
            Ok(TokenPlace::Bearer)
        } else if let Some(h) = s.strip_prefix("header:") {
            Ok(TokenPlace::Header(header_name(&field, h)?))
        } else if let Some(c) = s.strip_prefix("cookie:") {
            Ok(TokenPlace::Cookie(cookie_name(&field, c)?))
        } else {
            Err(invalid(
                field,
                format!("`{s}` is not bearer, header:<name> or cookie:<name>"),
            ))
        }
    }

    /// The placeholders of a text: the `{name}`s in it.
    pub fn placeholders(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else { break };
            out.push(&rest[i + 1..i + j]);
            rest = &rest[i + j + 1..];
        }
        out
    }

    /// Checks the settings, naming fields under `at` (`sources[0].auth`).
    pub(crate) fn validate(&self, at: &str, base_url: Option<&str>) -> Result<(), ConfigError> {
        if !self.login_url.starts_with('/') {
            let u = url::Url::parse(&self.login_url).map_err(|e| {
                invalid(
                    format!("{at}.login_url"),
                    format!("neither a path (/...) nor a URL: {e}"),
                )
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(invalid(format!("{at}.login_url"), "must be http or https"));
            }
        } else if base_url.is_none() {
            return Err(invalid(
                format!("{at}.login_url"),
                "a path needs the source's base_url",
            ));
        }
        if !matches!(self.method.as_str(), "POST" | "GET") {
            return Err(invalid(format!("{at}.method"), "\"POST\" or \"GET\""));
        }
        self.token_place(at)?;
        self.send_place(at)?;
        for h in self.headers.keys() {
            header_name(&format!("{at}.headers.{h}"), h)?;
        }
        let mut texts: Vec<String> = self.headers.values().cloned().collect();
        match &self.body {
            None => {}
            Some(LoginBody::Json(v)) => strings(v, &mut texts),
            Some(LoginBody::Form(f)) => texts.extend(f.values().cloned()),
        }
        for t in &texts {
            for p in Self::placeholders(t) {
                if !self.credentials.contains_key(p) {
                    return Err(invalid(
                        format!("{at}.body"),
                        format!("placeholder {{{p}}} names no entry of credentials"),
                    ));
                }
            }
        }
        Ok(())
    }
}
