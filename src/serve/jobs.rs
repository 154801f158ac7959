//! The job registry: idempotent batch submissions, kept in the compacted `intake.jobs` topic.
//!
//! A job id (the `Idempotency-Key` header or `?job_id=`) names one submission. The registry
//! maps it to the fingerprint of what was submitted (sha256 over source, stream and the batch
//! bytes or the referenced blob's sha256): the same id with the same fingerprint returns the
//! existing job; with another, 409. The job record is written in the same transaction as the
//! batch it describes, so a restarted server forgets nothing and never lands a job twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

use crate::kafka::{Kafka, reader};

/// A job as stored in `intake.jobs` and returned by `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Client-chosen id.
    pub job_id: String,
    /// Fingerprint of the submission (see the module docs).
    pub fingerprint: String,
    /// Source.
    pub source: String,
    /// Stream.
    pub stream: String,
    /// `landed` once its batch is committed to the landing topic.
    pub state: String,
    /// Records in the batch (counted when it was accepted).
    pub records: u64,
    /// Bytes of the batch.
    pub bytes: u64,
    /// The uploaded blob the batch came from, if by reference.
    #[serde(default)]
    pub blob: Option<String>,
    /// When it was landed (RFC 3339).
    pub landed_at: String,
}

/// The registry in memory, restored from `intake.jobs` at start.
#[derive(Default)]
pub struct Registry {
    jobs: DashMap<String, Job>,
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Registry {
    /// Reads every job from the topic (read_committed).
    ///
    /// # Errors
    /// Kafka errors.
    pub async fn restore(kafka: &Kafka, topic: &str) -> rdkafka::error::KafkaResult<Self> {
        let kafka = kafka.clone();
        let topic = topic.to_owned();
        let jobs = tokio::task::spawn_blocking(
            move || -> rdkafka::error::KafkaResult<HashMap<String, Job>> {
                let c = kafka.reader_consumer("jobs")?;
                let n = reader::partition_count(&c, &topic, Duration::from_secs(10))?;
                let parts: Vec<i32> = (0..n).collect();
                let mut out = HashMap::new();
                reader::read_to_end(&c, &topic, &parts, Duration::from_secs(120), |m| {
                    if let Some(Ok(j)) = m.payload().map(serde_json::from_slice::<Job>) {
                        out.insert(j.job_id.clone(), j);
                    }
                })?;
                Ok(out)
            },
        )
        .await
        .map_err(|_| rdkafka::error::KafkaError::Canceled)??;
        let reg = Self::default();
        for (k, v) in jobs {
            reg.jobs.insert(k, v);
        }
        Ok(reg)
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs.get(id).map(|j| j.clone())
    }

    /// Records a landed job.
    pub fn insert(&self, job: Job) {
        self.jobs.insert(job.job_id.clone(), job);
    }

    /// Number of jobs known.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is known.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Serialises submissions of one job id within this process.
    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.entry(id.to_owned()).or_default().clone()
    }
}

/// The fingerprint of a submission.
pub fn fingerprint(source: &str, stream: &str, content_sha256: &str) -> String {
    crate::blob::sha256_hex(format!("{source}\n{stream}\n{content_sha256}").as_bytes())
}
