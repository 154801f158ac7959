//! Secrets: tokens, webhook keys and SASL passwords.
//!
//! A secret is declared in the config as a reference (`{ env = "NAME" }` or `{ file = "path" }`)
//! or, for local demos only, as a literal string. It is resolved once at start. The resolved
//! value lives in [`SecretString`], whose `Debug` and `Display` print `[redacted]`, so a secret
//! cannot reach a log line, an error message or a landing header by accident: reading it takes
//! an explicit [`SecretString::expose`].

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret comes from, as written in the config file.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretRef {
    /// `{ env = "NAME" }`: read from an environment variable at start.
    Env {
        /// Name of the environment variable.
        env: String,
    },
    /// `{ file = "/run/secrets/x" }`: read from a file at start (trailing newline trimmed).
    File {
        /// Path of the file holding the secret.
        file: PathBuf,
    },
    /// A literal value in the config file. Meant for local demos; prefer `env` or `file`.
    Literal(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { env } => write!(f, "env:{env}"),
            SecretRef::File { file } => write!(f, "file:{}", file.display()),
            SecretRef::Literal(_) => f.write_str("literal:[redacted]"),
        }
    }
}

/// Why a secret could not be resolved. Never contains the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set or not Unicode.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file named in the config.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The resolved value is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Resolves the reference to its value.
    ///
    /// # Errors
    /// When the variable is unset, the file unreadable, or the value empty.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            SecretRef::Env { env } => {
                std::env::var(env).map_err(|_| SecretError::MissingEnv(env.clone()))?
            }
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map_err(|source| SecretError::File {
                    path: file.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            SecretRef::Literal(v) => v.clone(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(format!("{self:?}")));
        }
        Ok(SecretString(value))
    }
}

impl SecretRef {
    /// [`SecretRef::resolve`], with an error naming the config field (`serve.clients[0].key`).
    ///
    /// # Errors
    /// [`super::ConfigError::Secret`] when the reference cannot be resolved.
    pub fn resolve_field(
        &self,
        field: impl Into<String>,
    ) -> Result<SecretString, super::ConfigError> {
        self.resolve().map_err(|source| super::ConfigError::Secret {
            field: field.into(),
            source,
        })
    }
}

/// A resolved secret. `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value (tests and the simulator).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        let r = SecretRef::Literal("hunter2".into());
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn resolves_env_and_file_and_names_what_is_missing() {
        // SAFETY: this test is the only user of this variable name.
        unsafe { std::env::set_var("INTAKE_TEST_SECRET_X", "abc") };
        let r = SecretRef::Env {
            env: "INTAKE_TEST_SECRET_X".into(),
        };
        assert_eq!(r.resolve().unwrap().expose(), "abc");
        let err = SecretRef::Env {
            env: "INTAKE_TEST_NOPE".into(),
        }
        .resolve()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable INTAKE_TEST_NOPE is not set"
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "tok\n").unwrap();
        assert_eq!(
            SecretRef::File { file: p }.resolve().unwrap().expose(),
            "tok"
        );
    }
}
