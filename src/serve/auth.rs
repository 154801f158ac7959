//! Who may submit jobs and upload blobs: API keys per client (`[[serve.clients]]`).
//!
//! A request sends `Authorization: Bearer <key>`. No key, a malformed header or an unknown key
//! is answered 401 `unauthenticated` (with `WWW-Authenticate: Bearer`); a known key whose
//! client lacks the operation or the source is answered 403 `forbidden`. Both happen before
//! the request is looked at further, so nothing is landed or stored for them.
//!
//! Keys are compared in constant time: the presented key and every configured key are hashed
//! (sha256, so lengths do not matter) and every digest is compared with `subtle`, without
//! stopping at the first match. Keys live in [`SecretString`] and appear in no log line, error
//! message or metric; the client's name does.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::{
    ConfigError, SecretString, ServeAuth, ServeClient, ServeConfig, ServeOperation,
};

/// The error code of a 401 from here; its answers carry `WWW-Authenticate`.
pub(super) const UNAUTHENTICATED: &str = "unauthenticated";

/// The `WWW-Authenticate` challenge of a 401.
pub(super) const CHALLENGE: &str = "Bearer realm=\"intake\"";

struct Client {
    cfg: ServeClient,
    digest: [u8; 32],
}

/// The resolved clients of `serve.clients`.
pub(super) struct Clients {
    mode: ServeAuth,
    clients: Vec<Client>,
}

/// Who made a request, once its key was checked.
pub(super) struct Caller<'a> {
    client: Option<&'a Client>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Clients {
    /// Resolves every client's key.
    ///
    /// # Errors
    /// A key that cannot be resolved, or two clients with the same key, naming the field.
    pub(super) fn resolve(cfg: &ServeConfig) -> Result<Self, ConfigError> {
        let mut clients: Vec<Client> = Vec::with_capacity(cfg.clients.len());
        for (i, c) in cfg.clients.iter().enumerate() {
            let field = format!("serve.clients[{i}].key");
            let key: SecretString = c.key.resolve_field(&field)?;
            let digest = digest(key.expose());
            if let Some(other) = clients.iter().find(|o| o.digest == digest) {
                return Err(crate::config::invalid(
                    field,
                    format!(
                        "client `{}` has the same key as client `{}`; give each its own",
                        c.name, other.cfg.name
                    ),
                ));
            }
            clients.push(Client {
                cfg: c.clone(),
                digest,
            });
        }
        match (cfg.auth, clients.is_empty()) {
            (ServeAuth::None, _) => tracing::warn!(
                "serve.auth = \"none\": anyone who reaches serve.listen may submit jobs and upload blobs"
            ),
            (ServeAuth::ApiKeys, true) => tracing::info!(
                "no serve.clients configured: every job and blob request is refused (401)"
            ),
            (ServeAuth::ApiKeys, false) => {
                tracing::info!(clients = clients.len(), "serve API clients loaded");
            }
        }
        Ok(Self {
            mode: cfg.auth,
            clients,
        })
    }

    /// Checks the request's key and that its client may use `op`.
    ///
    /// # Errors
    /// 401 without a known key, 403 without the right.
    pub(super) fn check(
        &self,
        headers: &HeaderMap,
        op: ServeOperation,
    ) -> Result<Caller<'_>, ApiError> {
        if self.mode == ServeAuth::None {
            return Ok(Caller { client: None });
        }
        let unauthenticated = |reason: &str| {
            tracing::warn!(
                operation = op.as_str(),
                reason,
                "serve request refused: unauthenticated"
            );
            ApiError(StatusCode::UNAUTHORIZED, UNAUTHENTICATED, reason.to_owned())
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthenticated(
                "send an API key as `Authorization: Bearer <key>`",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header is not `Bearer <key>`"))?;
        let presented = digest(key);
        // Every digest is compared, whatever matched before.
        let mut found = None;
        for c in &self.clients {
            if bool::from(c.digest.ct_eq(&presented)) {
                found = Some(c);
            }
        }
        let client = found.ok_or_else(|| unauthenticated("unknown API key"))?;
        if !client.cfg.operations.contains(&op) {
            return Err(forbidden(
                client,
                op,
                None,
                format!("client `{}` may not use {}", client.cfg.name, op.as_str()),
            ));
        }
        Ok(Caller {
            client: Some(client),
        })
    }
}

fn forbidden(
    client: &Client,
    op: ServeOperation,
    source: Option<&str>,
    reason: String,
) -> ApiError {
    tracing::warn!(client = %client.cfg.name, operation = op.as_str(), source, "serve request refused: forbidden");
    ApiError(StatusCode::FORBIDDEN, "forbidden", reason)
}

impl Caller<'_> {
    /// The client's name (`-` with authentication off), for logs.
    pub(super) fn name(&self) -> &str {
        self.client.map_or("-", |c| c.cfg.name.as_str())
    }

    /// Checks that the client may act for `source`.
    ///
    /// # Errors
    /// 403 when it may not.
    pub(super) fn may_act_for(&self, op: ServeOperation, source: &str) -> Result<(), ApiError> {
        match self.client {
            Some(c) if !c.cfg.may_act_for(source) => Err(forbidden(
                c,
                op,
                Some(source),
                format!("client `{}` may not act for source `{source}`", c.cfg.name),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretRef, ServeClient};

    fn client(name: &str, key: &str, ops: &[ServeOperation], sources: &[&str]) -> ServeClient {
        ServeClient {
            name: name.into(),
            key: SecretRef::Literal(key.into()),
            operations: ops.to_vec(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn clients(list: Vec<ServeClient>) -> Clients {
        let cfg = ServeConfig {
            clients: list,
            ..ServeConfig::default()
        };
        Clients::resolve(&cfg).unwrap()
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn refused(r: Result<Caller<'_>, ApiError>) -> (u16, &'static str, String) {
        match r {
            Ok(c) => panic!("accepted as {}", c.name()),
            Err(ApiError(s, code, m)) => (s.as_u16(), code, m),
        }
    }

    #[test]
    fn keys_rights_and_sources() {
        let c = clients(vec![
            client("loader", "key-loader", &[ServeOperation::Jobs], &["shop"]),
            client("uploader", "key-uploader", &[ServeOperation::Blobs], &["*"]),
        ]);
        let jobs = ServeOperation::Jobs;
        for (h, why) in [
            (HeaderMap::new(), "send an API key"),
            (bearer("Basic a2V5LWxvYWRlcg=="), "not `Bearer <key>`"),
            (bearer("Bearer "), "not `Bearer <key>`"),
            (bearer("Bearer key-loade"), "unknown API key"),
            (bearer("Bearer key-loaderX"), "unknown API key"),
        ] {
            let (s, code, m) = refused(c.check(&h, jobs));
            assert_eq!((s, code), (401, UNAUTHENTICATED), "{m}");
            assert!(m.contains(why), "{m}");
            assert!(!m.contains("key-loader"), "{m}");
        }
        let caller = c.check(&bearer("Bearer key-loader"), jobs).unwrap();
        assert_eq!(caller.name(), "loader");
        // The scheme is case-insensitive.
        assert!(c.check(&bearer("bearer key-loader"), jobs).is_ok());
        caller.may_act_for(jobs, "shop").unwrap();
        let Err(ApiError(s, code, m)) = caller.may_act_for(jobs, "crm") else {
            panic!("another source is allowed");
        };
        assert_eq!((s.as_u16(), code), (403, "forbidden"));
        assert!(m.contains("`loader` may not act for source `crm`"), "{m}");
        let (s, code, m) = refused(c.check(&bearer("Bearer key-loader"), ServeOperation::Blobs));
        assert_eq!((s, code), (403, "forbidden"));
        assert!(m.contains("may not use blobs"), "{m}");
        let up = c
            .check(&bearer("Bearer key-uploader"), ServeOperation::Blobs)
            .unwrap();
        up.may_act_for(ServeOperation::Blobs, "anything").unwrap();
        refused(c.check(&bearer("Bearer key-uploader"), jobs));
    }

    #[test]
    fn no_clients_refuses_everyone_unless_auth_is_off() {
        let closed = clients(Vec::new());
        let (s, _, _) = refused(closed.check(&bearer("Bearer anything"), ServeOperation::Jobs));
        assert_eq!(s, 401);
        let open = Clients::resolve(&ServeConfig {
            auth: ServeAuth::None,
            ..ServeConfig::default()
        })
        .unwrap();
        let caller = open.check(&HeaderMap::new(), ServeOperation::Jobs).unwrap();
        caller.may_act_for(ServeOperation::Jobs, "any").unwrap();
    }

    #[test]
    fn two_clients_with_one_key_are_refused_without_showing_it() {
        let cfg = ServeConfig {
            clients: vec![
                client("a", "same-key-123", &[ServeOperation::Jobs], &["*"]),
                client("b", "same-key-123", &[ServeOperation::Jobs], &["*"]),
            ],
            ..ServeConfig::default()
        };
        let Err(e) = Clients::resolve(&cfg) else {
            panic!("accepted");
        };
        let e = e.to_string();
        assert!(e.contains("serve.clients[1].key"), "{e}");
        assert!(!e.contains("same-key-123"), "{e}");
        assert!(!format!("{cfg:?}").contains("same-key-123"));
    }
}
