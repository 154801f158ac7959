//! The claim-check blob store: payloads over the Kafka message limit are stored here first,
//! content-addressed by sha256, and a small reference is landed instead.
//!
//! Content addressing makes the write idempotent: a retried or re-fetched page rewrites the
//! same object under the same name. Local folders (`file:///dir`) by default; any
//! `object_store` URL (`s3://bucket/prefix`) in production.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, path::Path as ObjPath};
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::BlobConfig;

/// A reference to a stored blob, as carried in the `intake.blob` header and the landed value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobRef {
    /// Full URI of the object.
    pub uri: String,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl BlobRef {
    /// The `intake.blob` header value: `uri=<uri>;sha256=<hex>;size=<n>`.
    pub fn header_value(&self) -> String {
        format!("uri={};sha256={};size={}", self.uri, self.sha256, self.size)
    }

    /// Parses a header value back.
    pub fn parse_header(v: &str) -> Option<Self> {
        let mut uri = None;
        let mut sha = None;
        let mut size = None;
        for part in v.split(';') {
            match part.split_once('=') {
                Some(("uri", x)) => uri = Some(x.to_owned()),
                Some(("sha256", x)) => sha = Some(x.to_owned()),
                Some(("size", x)) => size = x.parse().ok(),
                _ => {}
            }
        }
        Some(Self {
            uri: uri?,
            sha256: sha?,
            size: size?,
        })
    }
}

/// Blob store failures.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The store URL is not usable.
    #[error("blob store url {url}: {reason}")]
    Url {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store failed (retry later).
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
    /// The content does not match its reference.
    #[error("blob {uri}: sha256 mismatch (expected {expected}, got {actual})")]
    Corrupt {
        /// URI.
        uri: String,
        /// From the reference.
        expected: String,
        /// Of the content read.
        actual: String,
    },
    /// An upload's name is taken by other content (uploads are immutable).
    #[error("blob `{0}` exists with other content; blobs are immutable, upload under a new name")]
    NameTaken(String),
    /// The reference points outside this store.
    #[error("blob {0} is not in this store")]
    Foreign(String),
}

/// The configured blob store.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    base: Url,
    prefix: ObjPath,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("base", &self.base.as_str())
            .finish()
    }
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl BlobStore {
    /// Opens the store named by `blob.url`. Local folders are created if missing.
    ///
    /// # Errors
    /// When the URL is not a supported store.
    pub fn open(cfg: &BlobConfig) -> Result<Self, BlobError> {
        let url_err = |reason: String| BlobError::Url {
            url: cfg.url.clone(),
            reason,
        };
        let base = Url::parse(&cfg.url).map_err(|e| url_err(e.to_string()))?;
        if base.scheme() == "file" {
            let dir = base
                .to_file_path()
                .map_err(|()| url_err("not an absolute path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| url_err(e.to_string()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(BlobError::Store)?;
            return Ok(Self {
                store: Arc::new(store),
                base,
                prefix: ObjPath::default(),
            });
        }
        let (store, prefix) = object_store::parse_url(&base).map_err(|e| url_err(e.to_string()))?;
        Ok(Self {
            store: Arc::from(store),
            base,
            prefix,
        })
    }

    fn object_path(&self, name: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in name.split('/') {
            p = p.child(part);
        }
        p
    }

    fn uri(&self, name: &str) -> String {
        format!("{}/{name}", self.base.as_str().trim_end_matches('/'))
    }

    /// Stores content under its sha256 (`sha256/<hex>`) and returns the reference.
    ///
    /// # Errors
    /// Store failures.
    pub async fn put(&self, bytes: Bytes) -> Result<BlobRef, BlobError> {
        let sha256 = sha256_hex(&bytes);
        let name = format!("sha256/{sha256}");
        let size = bytes.len() as u64;
        self.store
            .put(&self.object_path(&name), bytes.into())
            .await?;
        Ok(BlobRef {
            uri: self.uri(&name),
            sha256,
            size,
        })
    }

    /// Stores content under a caller's name (`uploads/<name>`, for `PUT /v1/blobs/{name}`).
    /// A name is written once: storing the same content again is a no-op that returns the
    /// same reference (`false`: it existed), other content under a taken name is refused
    /// ([`BlobError::NameTaken`]). The store's create-only put decides between two racing
    /// uploads.
    ///
    /// # Errors
    /// Store failures, or a name taken by other content.
    pub async fn put_named(&self, name: &str, bytes: Bytes) -> Result<(BlobRef, bool), BlobError> {
        let sha256 = sha256_hex(&bytes);
        let key = format!("uploads/{name}");
        let size = bytes.len() as u64;
        let r = BlobRef {
            uri: self.uri(&key),
            sha256,
            size,
        };
        let put = self
            .store
            .put_opts(
                &self.object_path(&key),
                bytes.into(),
                object_store::PutMode::Create.into(),
            )
            .await;
        match put {
            Ok(_) => Ok((r, true)),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let (existing, _) = self.get_named(name).await?;
                if existing.sha256 == r.sha256 {
                    Ok((r, false))
                } else {
                    Err(BlobError::NameTaken(name.to_owned()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an upload stored by [`BlobStore::put_named`], returning its reference and bytes.
    ///
    /// # Errors
    /// Store failures (including a missing object).
    pub async fn get_named(&self, name: &str) -> Result<(BlobRef, Bytes), BlobError> {
        let name = format!("uploads/{name}");
        let bytes = self
            .store
            .get(&self.object_path(&name))
            .await?
            .bytes()
            .await?;
        let r = BlobRef {
            uri: self.uri(&name),
            sha256: sha256_hex(&bytes),
            size: bytes.len() as u64,
        };
        Ok((r, bytes))
    }

    /// Reads a referenced blob and checks its sha256.
    ///
    /// # Errors
    /// Store failures, a foreign URI, or a checksum mismatch.
    pub async fn get(&self, r: &BlobRef) -> Result<Bytes, BlobError> {
        let base = self.base.as_str().trim_end_matches('/');
        let name = r
            .uri
            .strip_prefix(base)
            .and_then(|n| n.strip_prefix('/'))
            .ok_or_else(|| BlobError::Foreign(r.uri.clone()))?;
        let bytes = self
            .store
            .get(&self.object_path(name))
            .await?
            .bytes()
            .await?;
        let actual = sha256_hex(&bytes);
        if actual != r.sha256 {
            return Err(BlobError::Corrupt {
                uri: r.uri.clone(),
                expected: r.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// The claim-check reference a valid or curated topic carries instead of a record over the
/// stream's `max_message_bytes`: a small Avro record (schema [`CLAIM_CHECK_SCHEMA`], registered
/// under [`claim_check_subject`]), Confluent-framed like every value. The blob it names holds
/// the whole record as the topic would have carried it: Confluent-framed Avro whose schema id
/// (`schema_id`, a version of the topic's value subject) is in its first five bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCheck {
    /// The primary key's fields by name (the last segment of each `primary_key` pointer).
    pub key: std::collections::BTreeMap<String, String>,
    /// The record's version (`intake.version`), if it has one.
    pub version: Option<i64>,
    /// Where the body is, its sha256 and size.
    pub blob: BlobRef,
    /// The schema id of the body (the stream's schema).
    pub schema_id: u32,
}

/// The Avro schema of [`ClaimCheck`].
pub const CLAIM_CHECK_SCHEMA: &str = r#"{"type":"record","name":"ClaimCheck","namespace":"intake","doc":"A record over its topic's max.message.bytes: the body (Confluent-framed Avro of schema schema_id) is in the blob store at uri.","fields":[{"name":"key","type":{"type":"map","values":"string"},"doc":"primary key fields by name"},{"name":"version","type":["null","long"],"default":null},{"name":"uri","type":"string"},{"name":"sha256","type":"string","doc":"lower-case hex sha256 of the body"},{"name":"size","type":"long","doc":"bytes of the body"},{"name":"schema_id","type":"int","doc":"registry id of the body's schema"}]}"#;

/// The full name of the claim-check record.
pub const CLAIM_CHECK_NAME: &str = "intake.ClaimCheck";

/// The registry subject of the claim-check schema for `topic`: `<topic>-intake.ClaimCheck`
/// (TopicRecordNameStrategy, so the topic's own `<topic>-value` subject keeps one record type),
/// or `intake.ClaimCheck` under `registry.subject_strategy = "record"`.
pub fn claim_check_subject(strategy: crate::config::SubjectStrategy, topic: &str) -> String {
    match strategy {
        crate::config::SubjectStrategy::Record => CLAIM_CHECK_NAME.to_owned(),
        _ => format!("{topic}-{CLAIM_CHECK_NAME}"),
    }
}

fn claim_check_schema() -> &'static apache_avro::Schema {
    static SCHEMA: std::sync::OnceLock<apache_avro::Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        apache_avro::Schema::parse_str(CLAIM_CHECK_SCHEMA).expect("the claim-check schema parses")
    })
}

impl ClaimCheck {
    /// The Avro datum (without the Confluent frame).
    pub fn to_datum(&self) -> Vec<u8> {
        use apache_avro::types::Value;
        let value = Value::Record(vec![
            (
                "key".into(),
                Value::Map(
                    self.key
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            ),
            (
                "version".into(),
                match self.version {
                    Some(v) => Value::Union(1, Box::new(Value::Long(v))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            ("uri".into(), Value::String(self.blob.uri.clone())),
            ("sha256".into(), Value::String(self.blob.sha256.clone())),
            ("size".into(), Value::Long(self.blob.size as i64)),
            ("schema_id".into(), Value::Int(self.schema_id as i32)),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(claim_check_schema())
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("a claim-check value matches its schema")
    }

    /// Reads a datum written with [`CLAIM_CHECK_SCHEMA`].
    ///
    /// # Errors
    /// When the datum is not a claim-check record.
    pub fn from_datum(datum: &[u8]) -> Result<Self, String> {
        use apache_avro::types::Value;
        let v = apache_avro::reader::datum::GenericDatumReader::builder(claim_check_schema())
            .build()
            .and_then(|r| r.read_value(&mut &datum[..]))
            .map_err(|e| format!("not a claim-check record: {e}"))?;
        let Value::Record(fields) = v else {
            return Err("not a record".into());
        };
        let mut c = ClaimCheck {
            key: std::collections::BTreeMap::new(),
            version: None,
            blob: BlobRef {
                uri: String::new(),
                sha256: String::new(),
                size: 0,
            },
            schema_id: 0,
        };
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("key", Value::Map(m)) => {
                    for (k, v) in m {
                        if let Value::String(v) = v {
                            c.key.insert(k, v);
                        }
                    }
                }
                ("version", Value::Union(_, v)) => {
                    if let Value::Long(n) = *v {
                        c.version = Some(n);
                    }
                }
                ("uri", Value::String(x)) => c.blob.uri = x,
                ("sha256", Value::String(x)) => c.blob.sha256 = x,
                ("size", Value::Long(n)) => c.blob.size = n as u64,
                ("schema_id", Value::Int(n)) => c.schema_id = n as u32,
                _ => {}
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BlobConfig {
            url: format!("file://{}", dir.path().display()),
            max_inline_bytes: 1024,
            max_record_bytes: 1 << 20,
        };
        let store = BlobStore::open(&cfg).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn put_is_content_addressed_and_get_checks_the_hash() {
        let (dir, store) = local_store();
        let a = store.put(Bytes::from_static(b"hello")).await.unwrap();
        let b = store.put(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.sha256, sha256_hex(b"hello"));
        assert_eq!(a.size, 5);
        assert!(a.uri.ends_with(&format!("/sha256/{}", a.sha256)));
        assert_eq!(store.get(&a).await.unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(BlobRef::parse_header(&a.header_value()), Some(a.clone()));

        // Corrupt the object on disk: the read must refuse it.
        std::fs::write(dir.path().join("sha256").join(&a.sha256), b"HELLO").unwrap();
        assert!(matches!(
            store.get(&a).await,
            Err(BlobError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_claim_check_round_trips() {
        let c = ClaimCheck {
            key: [("id".to_owned(), "ord_1".to_owned())].into(),
            version: Some(7),
            blob: BlobRef {
                uri: "file:///b/sha256/ab".into(),
                sha256: "ab".into(),
                size: 5_000_000,
            },
            schema_id: 42,
        };
        assert_eq!(ClaimCheck::from_datum(&c.to_datum()).unwrap(), c);
        let none = ClaimCheck { version: None, ..c };
        assert_eq!(ClaimCheck::from_datum(&none.to_datum()).unwrap(), none);
        assert_eq!(
            claim_check_subject(crate::config::SubjectStrategy::Topic, "t.s.o"),
            "t.s.o-intake.ClaimCheck"
        );
    }

    #[tokio::test]
    async fn a_named_upload_is_written_once() {
        let (_dir, store) = local_store();
        let (a, created) = store
            .put_named("b.json", Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert!(created);
        let (again, created) = store
            .put_named("b.json", Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert_eq!(
            (again, created),
            (a.clone(), false),
            "the same content is a no-op"
        );
        let err = store
            .put_named("b.json", Bytes::from_static(b"two"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::NameTaken(ref n) if n == "b.json"),
            "{err}"
        );
        let (r, bytes) = store.get_named("b.json").await.unwrap();
        assert_eq!(
            (r, bytes),
            (a, Bytes::from_static(b"one")),
            "the first content stays"
        );
    }
}
