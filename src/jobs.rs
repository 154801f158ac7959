//! The job registry: idempotent batch submissions, kept in the compacted `intake.jobs` topic,
//! with the counts of what became of each job's records.
//!
//! A job id (the `Idempotency-Key` header or `?job_id=`) names one submission. The registry
//! maps it to the fingerprint of what was submitted (sha256 over source, stream and the batch
//! bytes or the referenced blob's sha256): the same id with the same fingerprint returns the
//! existing job; with another, 409. The job record is written in the same transaction as the
//! batch it describes, so a restarted server forgets nothing and never lands a job twice.
//!
//! # Counts, exactly once
//!
//! `GET /v1/jobs/{id}` reports `counts`: records `landed`, `valid`, `dead_lettered`,
//! `replayed` (re-landed from the DLQ by `intake dlq replay`) and `pending` (landed, not yet
//! accounted for). They are folded from [`CountDelta`] records that the stages write to
//! `intake.jobs` **inside the transaction that carries their outputs**:
//!
//! - validate, for every landing record with an `intake.job_id` header, writes the number of
//!   its records that went to the valid topic and to the DLQ, keyed by
//!   `~counts/validate/<landing topic>/<partition>/<offset>`: committed exactly when (and as
//!   often as) the outputs are, and a re-processed landing record writes the same key again;
//! - `intake dlq replay` writes, per job, minus the dead letters it re-landed and plus as many
//!   replayed, keyed by `~counts/replay/<replay id>/<job id>`; validate then counts the
//!   re-landed records like any others.
//!
//! The registry keeps every delta by key (a map, so reading one twice changes nothing) and sums
//! them per job. It follows the topic after the restore, so counts move while serve runs.
//! Non-job records of `intake.jobs` have keys starting with `~` and a `"type"` member
//! ([`CountDelta::TYPE`], or `replay` for the markers of `intake dlq replay`); [`parse`] tells
//! them apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
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
    /// `landed` once its batch is committed to the landing topic; in answers, `validating`
    /// while validate has not accounted for every record (after a replay, say) and `validated`
    /// once it has.
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
    /// Which landing of the job counts: a uuid also in its batch's `intake.job_attempt`
    /// header. Two serve processes may both land one job (a client's retry reached the other
    /// before the first's commit was visible to it); the registry keeps the job record read
    /// last, and counts only validate's deltas of the landing it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// What became of the records (folded from [`CountDelta`]s; the stored record has
    /// [`Counts::landed`]).
    #[serde(default)]
    pub counts: Counts,
}

/// What became of a job's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records landed (the batch's records once it is committed).
    pub landed: u64,
    /// Records validate sent to the valid topic.
    pub valid: u64,
    /// Records in the DLQ now (dead-lettered, less those replayed).
    pub dead_lettered: u64,
    /// Records re-landed from the DLQ by `intake dlq replay`.
    pub replayed: u64,
    /// Landed records validate has not accounted for yet.
    pub pending: u64,
}

impl Counts {
    /// The counts of a job just landed: every record landed and pending.
    pub fn landed(records: u64) -> Self {
        Counts {
            landed: records,
            pending: records,
            ..Counts::default()
        }
    }
}

/// A change to one job's counts, written by a stage in the transaction of its outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountDelta {
    /// Always [`CountDelta::TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The job.
    pub job_id: String,
    /// `validate` or `replay`.
    pub stage: String,
    /// What it counts: the landing record (`topic/partition/offset`) or the replay id.
    pub origin: String,
    /// Records to the valid topic.
    #[serde(default)]
    pub valid: i64,
    /// Records to the DLQ (negative: re-landed by a replay).
    #[serde(default)]
    pub dead_lettered: i64,
    /// Whole landing values to the DLQ, each standing for all of the job's records (a batch
    /// that could not be read at all); negative: re-landed by a replay.
    #[serde(default)]
    pub dead_lettered_whole: i64,
    /// Records re-landed from the DLQ.
    #[serde(default)]
    pub replayed: i64,
    /// The landing of the job it counts (validate's deltas: the batch's `intake.job_attempt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
}

impl CountDelta {
    /// The `"type"` of a count delta.
    pub const TYPE: &'static str = "counts";
    /// [`CountDelta::stage`] of validate's deltas.
    pub const VALIDATE: &'static str = "validate";
    /// [`CountDelta::stage`] of a replay's deltas.
    pub const REPLAY: &'static str = "replay";

    /// Validate's delta for one landing record (`origin` = `topic/partition/offset`).
    pub fn validate(
        job_id: &str,
        attempt: Option<&str>,
        origin: &str,
        valid: u64,
        dead: u64,
        whole: u64,
    ) -> Self {
        CountDelta {
            attempt: attempt.map(str::to_owned),
            record_type: Self::TYPE.into(),
            job_id: job_id.into(),
            stage: Self::VALIDATE.into(),
            origin: origin.into(),
            valid: valid as i64,
            dead_lettered: dead as i64,
            dead_lettered_whole: whole as i64,
            replayed: 0,
        }
    }

    /// A replay's delta for one job: `records` dead letters of single records and `whole`
    /// whole landing values re-landed.
    pub fn replay(job_id: &str, replay_id: &str, records: u64, whole: u64) -> Self {
        CountDelta {
            record_type: Self::TYPE.into(),
            job_id: job_id.into(),
            stage: Self::REPLAY.into(),
            origin: replay_id.into(),
            valid: 0,
            dead_lettered: -(records as i64),
            dead_lettered_whole: -(whole as i64),
            replayed: (records + whole) as i64,
            attempt: None,
        }
    }

    /// Its key in `intake.jobs`: deterministic, so a re-processed input rewrites the same key.
    pub fn key(&self) -> String {
        match self.stage.as_str() {
            Self::VALIDATE => format!("~counts/validate/{}", self.origin),
            _ => format!("~counts/{}/{}/{}", self.stage, self.origin, self.job_id),
        }
    }

    /// The JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialisable")
    }
}

/// A record of `intake.jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A job.
    Job(Box<Job>),
    /// A change to a job's counts.
    Counts(CountDelta),
    /// Something else (a replay marker, or a value this version does not know).
    Other,
}

/// Tells the records of `intake.jobs` apart by their `"type"` member (jobs have none).
pub fn parse(value: &[u8]) -> Entry {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        t: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Tag<'_>>(value) {
        Ok(Tag { t: None }) => serde_json::from_slice::<Job>(value)
            .map(|j| Entry::Job(Box::new(j)))
            .unwrap_or(Entry::Other),
        Ok(Tag { t: Some(t) }) if t == CountDelta::TYPE => serde_json::from_slice(value)
            .map(Entry::Counts)
            .unwrap_or(Entry::Other),
        _ => Entry::Other,
    }
}

/// Whether a value of `intake.jobs` is a job (not a count delta or replay marker).
pub fn is_job(value: &[u8]) -> bool {
    matches!(parse(value), Entry::Job(_))
}

#[derive(Default)]
struct Inner {
    jobs: DashMap<String, Job>,
    /// Job id → delta key → delta.
    deltas: DashMap<String, HashMap<String, CountDelta>>,
}

impl Inner {
    fn fold(&self, value: &[u8]) {
        match parse(value) {
            Entry::Job(j) => {
                self.jobs.insert(j.job_id.clone(), *j);
            }
            Entry::Counts(d) => {
                self.deltas
                    .entry(d.job_id.clone())
                    .or_default()
                    .insert(d.key(), d);
            }
            Entry::Other => {}
        }
    }
}

/// The registry in memory, restored from `intake.jobs` at start and following it after.
#[derive(Default)]
pub struct JobRegistry {
    inner: Arc<Inner>,
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Set on drop: the follower thread ends.
    stop: Arc<AtomicBool>,
}

impl Drop for JobRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl JobRegistry {
    /// Reads every record of the topic (read_committed), then follows it on a thread of its
    /// own (ended when the registry is dropped), so counts written by validate and replays
    /// show up in [`JobRegistry::get`].
    ///
    /// # Errors
    /// Kafka errors.
    pub async fn restore(kafka: &Kafka, topic: &str) -> rdkafka::error::KafkaResult<Self> {
        let reg = Self::default();
        let inner = reg.inner.clone();
        let k = kafka.clone();
        let t = topic.to_owned();
        let next = tokio::task::spawn_blocking(
            move || -> rdkafka::error::KafkaResult<(i32, HashMap<i32, i64>)> {
                let c = k.reader_consumer("jobs")?;
                let mut next = HashMap::new();
                let (n, _) = reader::read_topic(&c, &t, Duration::from_secs(120), |m| {
                    next.insert(m.partition(), m.offset() + 1);
                    if let Some(v) = m.payload() {
                        inner.fold(v);
                    }
                })?;
                Ok((n, next))
            },
        )
        .await
        .map_err(|_| rdkafka::error::KafkaError::Canceled)??;
        reg.follow(kafka, topic, next.0, &next.1)?;
        Ok(reg)
    }

    /// Follows `topic` from the given next offsets (the beginning for partitions not in it).
    fn follow(
        &self,
        kafka: &Kafka,
        topic: &str,
        partitions: i32,
        next: &HashMap<i32, i64>,
    ) -> rdkafka::error::KafkaResult<()> {
        let c = kafka.metadata_consumer("jobs-follow")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let at = next
                .get(&p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(topic, p, at)?;
        }
        c.assign(&tpl)?;
        let inner = self.inner.clone();
        let stop = self.stop.clone();
        let topic = topic.to_owned();
        std::thread::Builder::new()
            .name("jobs-follow".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match c.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            if let Some(v) = m.payload() {
                                inner.fold(v);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, topic = %topic, "following the job registry")
                        }
                        None => {}
                    }
                }
            })
            .map_err(|_| rdkafka::error::KafkaError::Canceled)?;
        Ok(())
    }

    /// A job by id, with its counts.
    pub fn get(&self, id: &str) -> Option<Job> {
        let mut job = self.inner.jobs.get(id).map(|j| j.clone())?;
        let deltas = self.inner.deltas.get(id);
        let (counts, validated) = fold_counts(&job, deltas.as_ref().map(|d| d.values()));
        job.counts = counts;
        if validated {
            job.state = if counts.pending == 0 {
                "validated".into()
            } else {
                "validating".into()
            };
        }
        Some(job)
    }

    /// Records a landed job.
    pub fn insert(&self, job: Job) {
        self.inner.jobs.insert(job.job_id.clone(), job);
    }

    /// Every job known, with its counts (for `intake status`).
    pub fn all(&self) -> Vec<Job> {
        // Ids first: `get` locks the map again, and a writer may be waiting between the two.
        let ids: Vec<String> = self.inner.jobs.iter().map(|e| e.key().clone()).collect();
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Number of jobs known.
    pub fn len(&self) -> usize {
        self.inner.jobs.len()
    }

    /// Whether no job is known.
    pub fn is_empty(&self) -> bool {
        self.inner.jobs.is_empty()
    }

    /// Serialises submissions of one job id within this process.
    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.entry(id.to_owned()).or_default().clone()
    }
}

/// Sums a job's deltas; also says whether validate has counted any of its landing records.
fn fold_counts<'a>(
    job: &Job,
    deltas: Option<impl Iterator<Item = &'a CountDelta>>,
) -> (Counts, bool) {
    let (mut valid, mut dead, mut whole, mut replayed) = (0i64, 0i64, 0i64, 0i64);
    let mut validated = false;
    for d in deltas.into_iter().flatten() {
        // A landing of the job other than the one its record names (another serve process
        // landed it too) is not the job's.
        if d.stage == CountDelta::VALIDATE
            && let (Some(counted), Some(this)) = (&job.attempt, &d.attempt)
            && counted != this
        {
            continue;
        }
        validated |= d.stage == CountDelta::VALIDATE;
        valid += d.valid;
        dead += d.dead_lettered;
        whole += d.dead_lettered_whole;
        replayed += d.replayed;
    }
    let landed = job.records;
    let dead = dead + whole * landed as i64;
    let (valid, dead) = (valid.max(0) as u64, dead.max(0) as u64);
    let counts = Counts {
        landed,
        valid,
        dead_lettered: dead,
        replayed: replayed.max(0) as u64,
        pending: landed.saturating_sub(valid + dead),
    };
    (counts, validated)
}

/// The fingerprint of a submission.
pub fn fingerprint(source: &str, stream: &str, content_sha256: &str) -> String {
    crate::blob::sha256_hex(format!("{source}\n{stream}\n{content_sha256}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(records: u64) -> Job {
        Job {
            job_id: "j-1".into(),
            fingerprint: "f".into(),
            source: "shop".into(),
            stream: "orders".into(),
            state: "landed".into(),
            records,
            bytes: 10,
            blob: None,
            landed_at: "2024-01-01T00:00:00Z".into(),
            counts: Counts::default(),
            attempt: None,
        }
    }

    #[test]
    fn entries_are_told_apart_by_type() {
        let j = job(3);
        assert_eq!(
            parse(&serde_json::to_vec(&j).unwrap()),
            Entry::Job(Box::new(j.clone()))
        );
        // A job stored before counts existed still parses.
        let mut old = serde_json::to_value(&j).unwrap();
        old.as_object_mut().unwrap().remove("counts");
        assert!(is_job(&serde_json::to_vec(&old).unwrap()));
        let d = CountDelta::validate("j-1", None, "t.landing/2/40", 2, 1, 0);
        assert_eq!(parse(&d.to_json()), Entry::Counts(d.clone()));
        assert_eq!(d.key(), "~counts/validate/t.landing/2/40");
        assert_eq!(
            CountDelta::replay("j-1", "r-abc", 1, 0).key(),
            "~counts/replay/r-abc/j-1"
        );
        assert_eq!(parse(br#"{"type":"replay","replay_id":"r"}"#), Entry::Other);
        assert_eq!(parse(b"not json"), Entry::Other);
        assert!(!is_job(&d.to_json()));
    }

    #[test]
    fn counts_fold_idempotently_and_follow_replays() {
        let reg = JobRegistry::default();
        reg.insert(job(5));
        assert_eq!(reg.get("j-1").unwrap().state, "landed");
        assert_eq!(reg.get("j-1").unwrap().counts.pending, 5);
        let v = CountDelta::validate("j-1", None, "t.landing/0/7", 3, 2, 0);
        reg.inner.fold(&v.to_json());
        reg.inner.fold(&v.to_json()); // read twice: no change
        let j = reg.get("j-1").unwrap();
        assert_eq!(
            j.counts,
            Counts {
                landed: 5,
                valid: 3,
                dead_lettered: 2,
                replayed: 0,
                pending: 0
            }
        );
        assert_eq!(j.state, "validated");
        // A replay of one dead letter, then validate passes it.
        reg.inner
            .fold(&CountDelta::replay("j-1", "r-1", 1, 0).to_json());
        let j = reg.get("j-1").unwrap();
        assert_eq!((j.counts.dead_lettered, j.counts.pending), (1, 1));
        assert_eq!(j.state, "validating");
        reg.inner
            .fold(&CountDelta::validate("j-1", None, "t.landing/1/3", 1, 0, 0).to_json());
        let j = reg.get("j-1").unwrap();
        assert_eq!(
            j.counts,
            Counts {
                landed: 5,
                valid: 4,
                dead_lettered: 1,
                replayed: 1,
                pending: 0
            }
        );
        // A batch dead-lettered whole counts all its records.
        reg.inner.fold(
            &serde_json::to_vec(&Job {
                job_id: "j-2".into(),
                ..job(4)
            })
            .unwrap(),
        );
        reg.inner
            .fold(&CountDelta::validate("j-2", None, "t.landing/0/9", 0, 0, 1).to_json());
        assert_eq!(reg.get("j-2").unwrap().counts.dead_lettered, 4);
        assert!(reg.get("nope").is_none());
    }

    #[test]
    fn only_the_landing_the_job_record_names_is_counted() {
        // Two serve processes landed job j-1 (attempts a and b); the record read last names b.
        let reg = JobRegistry::default();
        for attempt in ["a", "b"] {
            reg.inner.fold(
                &serde_json::to_vec(&Job {
                    attempt: Some(attempt.into()),
                    ..job(5)
                })
                .unwrap(),
            );
        }
        for (attempt, origin) in [("a", "t.landing/0/7"), ("b", "t.landing/0/9")] {
            reg.inner
                .fold(&CountDelta::validate("j-1", Some(attempt), origin, 5, 0, 0).to_json());
        }
        let j = reg.get("j-1").unwrap();
        assert_eq!((j.counts.valid, j.counts.pending), (5, 0));
        assert_eq!(j.state, "validated");
        // Only a's landing validated so far: b's records are still pending.
        let reg = JobRegistry::default();
        reg.inner.fold(
            &serde_json::to_vec(&Job {
                attempt: Some("b".into()),
                ..job(5)
            })
            .unwrap(),
        );
        reg.inner
            .fold(&CountDelta::validate("j-1", Some("a"), "t.landing/0/7", 5, 0, 0).to_json());
        assert_eq!(reg.get("j-1").unwrap().counts.pending, 5);
    }
}
