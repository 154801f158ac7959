//! Every default of the configuration, in one place.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn group_prefix() -> String {
    "intake".into()
}
pub(crate) const fn transaction_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn registry_url() -> String {
    "http://127.0.0.1:8081/apis/ccompat/v7".into()
}
pub(crate) fn schema_dir() -> PathBuf {
    PathBuf::from("topics/schemas")
}
pub(crate) const fn schema_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
pub(crate) fn blob_url() -> String {
    let dir = std::env::current_dir()
        .unwrap_or_else(|_| PathBuf::from("/tmp"))
        .join(".intake/blobs");
    format!("file://{}", dir.display())
}
/// 900 KiB: under the broker's default 1 MiB `message.max.bytes` with room for headers.
pub(crate) const fn max_inline_bytes() -> usize {
    900 * 1024
}
/// The broker's default `message.max.bytes` (1 MiB and 12 bytes of record batch overhead).
pub(crate) const fn max_message_bytes() -> usize {
    1_048_588
}
/// 256 MiB: the largest record validate takes into memory to store by claim-check.
pub(crate) const fn max_record_bytes() -> usize {
    256 * 1024 * 1024
}
pub(crate) fn topic_prefix() -> String {
    "intake".into()
}
pub(crate) fn topics_dir() -> PathBuf {
    PathBuf::from("topics")
}
pub(crate) const fn replication_factor() -> i32 {
    1
}
pub(crate) fn serve_listen() -> String {
    "127.0.0.1:8080".into()
}
/// 4 MiB: webhooks are small; batches above this go by reference (`PUT /v1/blobs/{name}`).
pub(crate) const fn dlq_quiet_for() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

pub(crate) const fn max_body_bytes() -> usize {
    4 * 1024 * 1024
}
pub(crate) const fn webhook_tolerance() -> Duration {
    Duration::from_secs(300)
}
pub(crate) const fn page_size() -> u32 {
    100
}
pub(crate) const fn poll_interval() -> Duration {
    Duration::from_secs(30)
}
pub(crate) const fn yes() -> bool {
    true
}
pub(crate) const fn lookback() -> Duration {
    Duration::from_secs(0)
}
pub(crate) const fn request_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(crate) const fn max_retries() -> u32 {
    8
}
pub(crate) const fn pages_per_transaction() -> u32 {
    10
}
pub(crate) fn records_pointer() -> String {
    "/data".into()
}
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "intake".into())
}

impl Default for super::RegistryConfig {
    fn default() -> Self {
        Self {
            url: registry_url(),
            schema_dir: schema_dir(),
            cache_ttl: schema_cache_ttl(),
            subject_strategy: super::SubjectStrategy::default(),
            auth: None,
            tls: None,
        }
    }
}
impl Default for super::BlobConfig {
    fn default() -> Self {
        Self {
            url: blob_url(),
            max_inline_bytes: max_inline_bytes(),
            max_record_bytes: max_record_bytes(),
        }
    }
}
impl Default for super::TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: topic_prefix(),
            dir: topics_dir(),
            replication_factor: replication_factor(),
            min_insync_replicas: None,
        }
    }
}
impl Default for super::ServeConfig {
    fn default() -> Self {
        Self {
            listen: serve_listen(),
            admin_listen: None,
            max_body_bytes: max_body_bytes(),
            webhook_tolerance: webhook_tolerance(),
            auth: super::ServeAuth::default(),
            clients: Vec::new(),
            tls: None,
        }
    }
}
