//! `intake reprocess --stream S [--from TIME]`: validate a stream's landed pages again with
//! today's configuration and schemas, without one request to the API.
//!
//! Every raw page is already in the landing topic. After a change of record selector, key,
//! schema or drift policy, reprocessing re-lands that stream's landing records (pages, job
//! batches, claim-checked pages and webhook events; from `--from` on, or all the landing topic
//! holds) as copies, and the validate stage splits and checks them as it does any landing
//! record: into the valid topic and the DLQ (repeats counted by the quiet DLQ), and dedup
//! merges them into the curated topic (a record it already holds at the same version and
//! content stays as it is; one that failed before and passes now is new there).
//!
//! # What a copy is
//!
//! The landing record's key, value and headers, in the same landing partition, plus
//! `intake.reprocess_id` and `intake.reprocess_of` (`<landing>/<partition>/<offset>`), without
//! the headers that place a page in a sync (`intake.cursor`, `intake.next_cursor`,
//! `intake.seq` (an event keeps it: it is its version), `intake.mode`, `intake.sync_id`,
//! `intake.window`: a copy is part of no sync,
//! so it moves no cursor and deletes nothing) nor a job's (`intake.job_id`,
//! `intake.job_attempt`: a job's counts are its records', once). Sync markers are not copied,
//! nor copies of an earlier reprocess or `intake dlq replay`'s re-landed dead letters (their
//! originals are copied).
//!
//! # Exactly once
//!
//! One transactional id per deployment (`<group_prefix>-reprocess`), so a run fences any
//! other. A run is named by its id (default: the stream and `--from`). Its plan (where each
//! landing partition's reading starts and ends, the ends taken when it began) and its progress
//! (where to read next) are a record in `intake.jobs` (`~reprocess/<id>`), committed in the
//! same transaction as each batch of copies. So a run that is killed resumes, when started
//! again with the same id, after the last batch it committed; a finished id is a no-op (pass
//! another `--id` to reprocess again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::headers::{self, Headers, Kind};
use crate::kafka::txn::{self, Backoff, Policy};
use crate::kafka::{Kafka, Outgoing, TxnProducer, reader};
use crate::topics::TopicNames;

/// A one-off run's transaction stays open while it reads (a reprocess run a batch, a replay the
/// chosen dead letters): at least this long a timeout (the broker's
/// `transaction.max.timeout.ms` is 15 minutes by default).
const TXN_TIMEOUT: Duration = Duration::from_secs(300);
/// Metadata and watermark queries.
const META_TIMEOUT: Duration = Duration::from_secs(30);
/// Reading the plan back, and each stretch of the landing topic without a record.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// A batch of copies commits at this many landing records...
const BATCH_RECORDS: usize = 200;
/// ...or this many bytes of values.
const BATCH_BYTES: usize = 16 << 20;
/// The longest run id accepted (a reprocess run's, a replay's).
const MAX_ID_LEN: usize = 200;
/// Headers of a page's position in a sync: neither a copy nor a replayed record carries them.
pub(crate) const PAGE_POSITION: [&str; 4] = [
    headers::CURSOR,
    headers::NEXT_CURSOR,
    headers::SEQ,
    headers::MODE,
];
/// Headers of a record's place in a sync and in a job, which a copy does not carry either.
const SYNC_AND_JOB: [&str; 4] = [
    headers::SYNC_ID,
    headers::WINDOW,
    headers::JOB_ID,
    headers::JOB_ATTEMPT,
];

/// What to reprocess.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The stream: `source/stream`, or its name alone when unique.
    pub stream: String,
    /// Landing records from this time on (their Kafka timestamp); default: all.
    pub from: Option<OffsetDateTime>,
    /// The run's id (default: derived from the stream and `from`).
    pub id: Option<String>,
    /// Landing records per transaction (default 200).
    pub batch: Option<usize>,
    /// A progress bar on a terminal.
    pub progress: bool,
}

/// A run's plan and progress, its record in `intake.jobs` (`~reprocess/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Always [`Progress::TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The run's id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Stream name.
    pub stream: String,
    /// The landing topic.
    pub landing: String,
    /// `--from` (RFC 3339), if given.
    pub from: Option<String>,
    /// When the run began (RFC 3339).
    pub started_at: String,
    /// When this record was written (RFC 3339).
    pub updated_at: String,
    /// Landing partition → the offset its reading ends before (its end when the run began).
    pub ends: BTreeMap<i32, i64>,
    /// Landing partition → the next offset to read.
    pub next: BTreeMap<i32, i64>,
    /// Landing records copied so far.
    pub copied: u64,
    /// Every partition read to its end.
    pub done: bool,
}

/// A record of `intake.jobs` told apart from the others by its `"type"` member (a reprocess
/// run's [`Progress`], a replay's [`crate::dlq::replay::Marker`]).
pub trait TypedJobRecord: serde::de::DeserializeOwned {
    /// The `"type"` of this kind of record.
    const TYPE: &'static str;

    /// Parses a value of `intake.jobs`; None when it is not a record of this kind (its
    /// `"type"` is checked first, so other records are not parsed in full).
    fn parse(value: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Type {
            #[serde(rename = "type")]
            record_type: String,
        }
        let t: Type = serde_json::from_slice(value).ok()?;
        if t.record_type != Self::TYPE {
            return None;
        }
        serde_json::from_slice(value).ok()
    }
}

impl TypedJobRecord for Progress {
    /// The `"type"` of a reprocess record in `intake.jobs`.
    const TYPE: &'static str = "reprocess";
}

impl Progress {
    /// Its key in `intake.jobs`.
    pub fn key(&self) -> String {
        key_of(&self.id)
    }

    /// Landing records left to read (offsets, markers and other streams' records included).
    pub fn left(&self) -> u64 {
        self.ends
            .iter()
            .map(|(p, end)| (end - self.next.get(p).copied().unwrap_or(*end)).max(0) as u64)
            .sum()
    }
}

/// Checks a run id given on the command line (`what`: `reprocess`, `replay`): 1 to
/// [`MAX_ID_LEN`] characters without '/', as it becomes part of keys in `intake.jobs`.
///
/// # Errors
/// The id does not fit.
pub(crate) fn check_run_id(what: &str, id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !id.is_empty() && id.len() <= MAX_ID_LEN && !id.contains('/'),
        "a {what} id is 1-{MAX_ID_LEN} characters without '/'"
    );
    Ok(())
}

/// What a one-off run (a reprocess run, a DLQ replay) reads and writes with: the topic names,
/// the Kafka clients, and the group prefix its transactional id starts with.
pub(crate) struct OneOffKafka {
    /// Topic names.
    pub names: TopicNames,
    /// The configured Kafka clients with the transaction timeout raised to at least
    /// [`TXN_TIMEOUT`].
    pub kafka: Kafka,
    /// `kafka.group_prefix`.
    group_prefix: String,
}

impl OneOffKafka {
    /// The names and clients of a one-off run with `cfg`.
    ///
    /// # Errors
    /// A secret of the Kafka config that cannot be resolved.
    pub(crate) fn open(cfg: &Config) -> Result<Self, crate::config::ConfigError> {
        let mut kcfg = cfg.kafka.clone();
        kcfg.transaction_timeout = kcfg.transaction_timeout.max(TXN_TIMEOUT);
        Ok(OneOffKafka {
            names: TopicNames::from_config(cfg),
            kafka: Kafka::new(&kcfg)?,
            group_prefix: cfg.kafka.group_prefix.clone(),
        })
    }

    /// Opens the transactional producer of the run's `writer` and initialises it, which
    /// fences every other run of the same writer; transient failures are retried, 200 ms to
    /// 2 s apart, for up to `patience`. Blocking.
    ///
    /// # Errors
    /// The Kafka error: a fatal one, or the last one when `patience` ran out.
    pub(crate) fn fencing_producer(
        &self,
        writer: txn::Writer,
        patience: Duration,
    ) -> rdkafka::error::KafkaResult<TxnProducer> {
        let producer = self
            .kafka
            .txn_producer(&txn::transactional_id(&self.group_prefix, writer))?;
        producer.init_retrying(
            Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
            Some(Instant::now() + patience),
        )?;
        Ok(producer)
    }
}

fn key_of(id: &str) -> String {
    format!("~reprocess/{id}")
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run's id.
    pub id: String,
    /// `source/stream`.
    pub stream: String,
    /// The landing topic.
    pub landing: String,
    /// Set when the id had finished before (when it began): nothing was done.
    pub already_done: Option<String>,
    /// Whether this run resumed one that had stopped.
    pub resumed: bool,
    /// Landing records read by this run.
    pub read: u64,
    /// Of those, copied (committed) by this run.
    pub copied: u64,
    /// Copied by the whole run, earlier attempts included.
    pub copied_total: u64,
    /// Transactions committed by this run.
    pub batches: u64,
}

/// Runs (or resumes) a reprocess.
///
/// # Errors
/// An unknown stream, a bad id, Kafka errors; a run fenced by another that started meanwhile
/// (what it committed stays; run it again to resume).
pub async fn run(cfg: &Config, opts: Options) -> anyhow::Result<Report> {
    if let Some(id) = &opts.id {
        check_run_id("reprocess", id)?;
    }
    anyhow::ensure!(opts.batch != Some(0), "--batch is at least 1");
    let (src, st) = cfg.stream(&opts.stream).ok_or_else(|| {
        anyhow::anyhow!(
            "no stream `{}` in the configuration (or the name is not unique: use source/stream)",
            opts.stream
        )
    })?;
    let (source, stream) = (src.name.clone(), st.name.clone());
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || Run::new(&cfg, &opts, source, stream)?.go()).await?
}

struct Run<'a> {
    opts: &'a Options,
    source: String,
    stream: String,
    /// Names and clients.
    io: OneOffKafka,
}

impl<'a> Run<'a> {
    fn new(
        cfg: &Config,
        opts: &'a Options,
        source: String,
        stream: String,
    ) -> anyhow::Result<Self> {
        Ok(Run {
            opts,
            source,
            stream,
            io: OneOffKafka::open(cfg)?,
        })
    }

    fn id(&self) -> String {
        self.opts.id.clone().unwrap_or_else(|| {
            let from = self
                .opts
                .from
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_else(|| "all".into());
            format!("{}.{}@{from}", self.source, self.stream)
        })
    }

    fn go(self) -> anyhow::Result<Report> {
        let id = self.id();
        let landing = self.io.names.landing();
        let mut report = Report {
            id: id.clone(),
            stream: crate::contract::stream_key(&self.source, &self.stream),
            landing: landing.clone(),
            ..Report::default()
        };
        let producer = self
            .io
            .fencing_producer(txn::Writer::Reprocess, META_TIMEOUT * 3)?;
        // Fenced every other run: what is committed now is this id's whole progress.
        let mut progress = match self.committed(&id)? {
            Some(p) if p.done => {
                report.already_done = Some(p.updated_at.clone());
                report.copied_total = p.copied;
                return Ok(report);
            }
            Some(p) => {
                anyhow::ensure!(
                    p.source == self.source && p.stream == self.stream && p.landing == landing,
                    "reprocess id `{id}` was begun for {}/{} on {}: choose another --id",
                    p.source,
                    p.stream,
                    p.landing
                );
                report.resumed = true;
                tracing::info!(
                    id,
                    left = p.left(),
                    copied = p.copied,
                    "resuming a reprocess"
                );
                p
            }
            None => self.plan(&id)?,
        };
        let pb = crate::telemetry::bar(
            self.opts.progress,
            progress.left(),
            "reprocess",
            "landing offsets",
        );
        let batch_max = self.opts.batch.unwrap_or(BATCH_RECORDS);
        let reader = self.io.kafka.reader_consumer("reprocess")?;
        let mut tpl = TopicPartitionList::new();
        for (p, end) in &progress.ends {
            let next = progress.next.get(p).copied().unwrap_or(*end);
            if next < *end {
                tpl.add_partition_offset(&landing, *p, Offset::Offset(next))?;
            }
        }
        reader.assign(&tpl)?;
        let mut batch: Vec<Copy> = Vec::new();
        let mut bytes = 0usize;
        let mut read_to: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_record = Instant::now();
        loop {
            let open: Vec<i32> = progress
                .ends
                .iter()
                .filter(|(p, end)| {
                    read_to
                        .get(p)
                        .or(progress.next.get(p))
                        .is_some_and(|n| n < end)
                })
                .map(|(p, _)| *p)
                .collect();
            let full = batch.len() >= batch_max || bytes >= BATCH_BYTES;
            if full || open.is_empty() {
                // Commit what was read (copies, if any, and where reading stands).
                let gained: i64 = read_to
                    .iter()
                    .map(|(p, o)| o - progress.next.get(p).copied().unwrap_or(*o))
                    .sum();
                for (p, o) in &read_to {
                    progress.next.insert(*p, *o);
                }
                progress.done = open.is_empty();
                progress.copied += batch.len() as u64;
                progress.updated_at = headers::now_rfc3339();
                self.commit(&producer, &landing, &batch, &progress)
                    .map_err(|e| {
                        anyhow::Error::new(e).context(format!(
                            "reprocess {id}: a batch was not committed (another run may have fenced this one); run the same command again to resume after the last committed batch"
                        ))
                    })?;
                report.copied += batch.len() as u64;
                report.batches += 1;
                pb.inc(gained.max(0) as u64);
                if crate::faults::hit(crate::faults::Fault::ReprocessCrash) {
                    tracing::warn!(
                        fault = crate::faults::Fault::ReprocessCrash.name(),
                        id,
                        copied = progress.copied,
                        "deliberate fault: the process ends right after a committed batch"
                    );
                    std::process::abort();
                }
                batch.clear();
                bytes = 0;
                read_to.clear();
                if open.is_empty() {
                    break;
                }
            }
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_record = Instant::now();
                    let (p, o) = (m.partition(), m.offset());
                    let Some(end) = progress.ends.get(&p).copied() else {
                        continue;
                    };
                    if o < end {
                        report.read += 1;
                        if let Some(c) = self.copy_of(&m, &id, &landing) {
                            bytes += c.value.as_ref().map_or(0, Vec::len);
                            batch.push(c);
                        }
                    }
                    read_to.insert(p, (o + 1).min(end));
                    if o + 1 >= end {
                        // Done with it: the copies landing after its end are not read back.
                        pause(&reader, &landing, p);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "reading the landing topic");
                }
                None => {}
            }
            // Markers and aborted records are never delivered: the position moves past them.
            for e in reader.position()?.elements_for_topic(&landing) {
                let p = e.partition();
                if let (Offset::Offset(o), Some(end)) = (e.offset(), progress.ends.get(&p)) {
                    let o = o.min(*end);
                    let at = read_to
                        .get(&p)
                        .or(progress.next.get(&p))
                        .copied()
                        .unwrap_or(o);
                    if o > at {
                        read_to.insert(p, o);
                        last_record = Instant::now();
                        if o >= *end {
                            pause(&reader, &landing, p);
                        }
                    }
                }
            }
            anyhow::ensure!(
                last_record.elapsed() < READ_TIMEOUT,
                "reprocess {id}: the landing topic gave nothing for {} s before its planned end (partitions {open:?}); run the same command again to resume",
                READ_TIMEOUT.as_secs()
            );
        }
        pb.finish_and_clear();
        let _ = reader.unassign();
        report.copied_total = progress.copied;
        Ok(report)
    }

    /// The latest committed record of `id` in `intake.jobs`.
    fn committed(&self, id: &str) -> anyhow::Result<Option<Progress>> {
        let key = key_of(id);
        let mut last = None;
        crate::dlq::scan_topic(&self.io.kafka, &self.io.names.jobs(), |m| {
            if m.key() == Some(key.as_bytes()) {
                last = m.payload().and_then(Progress::parse);
            }
        })?;
        Ok(last)
    }

    /// A new run's plan: each landing partition from `--from` (or its beginning) to its end now.
    fn plan(&self, id: &str) -> anyhow::Result<Progress> {
        let landing = self.io.names.landing();
        let reader = self.io.kafka.reader_consumer("reprocess-plan")?;
        let n = reader::partition_count(&reader, &landing, META_TIMEOUT)?;
        let mut ends = BTreeMap::new();
        let mut next = BTreeMap::new();
        for p in 0..n {
            let (lo, hi) = reader.high_watermarks(&landing, p, META_TIMEOUT)?;
            ends.insert(p, hi);
            next.insert(p, lo);
        }
        if let Some(from) = self.opts.from {
            let ms = (from.unix_timestamp_nanos() / 1_000_000) as i64;
            let mut tpl = TopicPartitionList::new();
            for p in 0..n {
                tpl.add_partition_offset(&landing, p, Offset::Offset(ms))?;
            }
            for e in reader
                .offsets_for_times(tpl, META_TIMEOUT)?
                .elements_for_topic(&landing)
            {
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    // No record at or after that time.
                    _ => ends[&e.partition()],
                };
                next.insert(e.partition(), at.max(next[&e.partition()]));
            }
        }
        let now = headers::now_rfc3339();
        Ok(Progress {
            record_type: Progress::TYPE.into(),
            id: id.to_owned(),
            source: self.source.clone(),
            stream: self.stream.clone(),
            landing,
            from: self.opts.from.and_then(|t| t.format(&Rfc3339).ok()),
            started_at: now.clone(),
            updated_at: now,
            ends,
            next,
            copied: 0,
            done: false,
        })
    }

    /// The copy of a landing record of this stream, or None for anything else.
    fn copy_of(&self, m: &BorrowedMessage<'_>, id: &str, landing: &str) -> Option<Copy> {
        let h = m.headers();
        if headers::get_str(h, headers::SOURCE) != Some(self.source.as_str())
            || headers::get_str(h, headers::STREAM) != Some(self.stream.as_str())
            || headers::get(h, headers::REPROCESS_ID).is_some()
            || headers::get(h, headers::REPLAY_ID).is_some()
        {
            return None;
        }
        let kind = headers::get(h, headers::KIND).and_then(Kind::parse);
        match kind {
            Some(Kind::Page | Kind::Batch | Kind::BlobRef | Kind::Event) => {}
            Some(Kind::SyncBegin | Kind::SyncEnd) | None => return None,
        }
        // An event's `intake.seq` is its version, not a place in a sync.
        let event = kind == Some(Kind::Event);
        let mut out = Headers::new();
        if let Some(h) = h {
            for x in h.iter() {
                let not_copied = PAGE_POSITION.contains(&x.key) || SYNC_AND_JOB.contains(&x.key);
                if not_copied && !(event && x.key == headers::SEQ) {
                    continue;
                }
                if let Some(v) = x.value {
                    out = out.with(x.key, v);
                }
            }
        }
        let out = out.with(headers::REPROCESS_ID, id).with(
            headers::REPROCESS_OF,
            format!("{landing}/{}/{}", m.partition(), m.offset()),
        );
        Some(Copy {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: out,
        })
    }

    /// One transaction: the copies and the run's record.
    fn commit(
        &self,
        producer: &TxnProducer,
        landing: &str,
        batch: &[Copy],
        progress: &Progress,
    ) -> rdkafka::error::KafkaResult<()> {
        let jobs = self.io.names.jobs();
        let record = serde_json::to_vec(progress).expect("serialisable");
        let key = progress.key();
        txn::run(producer, &Policy::retrying(5), |p| {
            for c in batch {
                p.send(Outgoing {
                    topic: landing,
                    key: c.key.as_deref(),
                    payload: c.value.as_deref(),
                    headers: c.headers.clone_owned(),
                    partition: Some(c.partition),
                })?;
            }
            p.send(Outgoing {
                topic: &jobs,
                key: Some(key.as_bytes()),
                payload: Some(&record),
                headers: Headers::new().build(),
                partition: None,
            })
        })
        .into_error()
        .map_or(Ok(()), Err)
    }
}

/// Stops fetching `partition` (read to its planned end).
fn pause(reader: &reader::Reader, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = reader.pause(&tpl) {
        tracing::debug!(error = %e, partition, "pausing a partition read to its end");
    }
}

/// One landing record's copy, waiting for its batch to commit.
struct Copy {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers,
}

/// Prints a report for a person.
pub fn print(r: &Report) {
    if let Some(at) = &r.already_done {
        println!(
            "reprocess {} of {} finished at {at} ({} landing records copied): nothing to do; pass another --id to reprocess again",
            r.id, r.stream, r.copied_total
        );
        return;
    }
    println!(
        "reprocess {} of {}{}: {} landing records read, {} copied to {} in {} transactions ({} in all); validate and dedup take them from there",
        r.id,
        r.stream,
        if r.resumed { " (resumed)" } else { "" },
        r.read,
        r.copied,
        r.landing,
        r.batches,
        r.copied_total
    );
}

/// Parses `--from`: RFC 3339, or a date (`2026-12-01`, midnight UTC).
///
/// # Errors
/// Neither form.
pub fn parse_from(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let date = || -> Option<OffsetDateTime> {
        let mut parts = s.splitn(3, '-');
        let year: i32 = parts.next()?.parse().ok()?;
        let month: u8 = parts.next()?.parse().ok()?;
        let day: u8 = parts.next()?.parse().ok()?;
        let month = time::Month::try_from(month).ok()?;
        let d = time::Date::from_calendar_date(year, month, day).ok()?;
        Some(d.midnight().assume_utc())
    };
    date().ok_or_else(|| {
        format!("`{s}` is neither RFC 3339 (2026-12-01T00:00:00Z) nor a date (2026-12-01)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_rfc3339_or_a_date() {
        let t = parse_from("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(t.unix_timestamp(), 1_796_119_200);
        let d = parse_from("2026-12-01").unwrap();
        assert_eq!(d.unix_timestamp(), 1_796_083_200);
        for bad in ["yesterday", "2026-13-01", "2026-12", ""] {
            assert!(parse_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_round_trips_and_counts_what_is_left() {
        let p = Progress {
            record_type: Progress::TYPE.into(),
            id: "sim.customers@all".into(),
            source: "sim".into(),
            stream: "customers".into(),
            landing: "intake.landing".into(),
            from: None,
            started_at: "2026-12-01T00:00:00Z".into(),
            updated_at: "2026-12-01T00:00:01Z".into(),
            ends: BTreeMap::from([(0, 100), (1, 50), (2, 0)]),
            next: BTreeMap::from([(0, 40), (1, 50), (2, 0)]),
            copied: 7,
            done: false,
        };
        assert_eq!(p.left(), 60);
        assert_eq!(p.key(), "~reprocess/sim.customers@all");
        let bytes = serde_json::to_vec(&p).unwrap();
        assert_eq!(Progress::parse(&bytes), Some(p));
        // Other records of `intake.jobs` are not a reprocess's.
        assert_eq!(
            Progress::parse(br#"{"type":"replay","replay_id":"r"}"#),
            None
        );
        assert!(matches!(
            crate::jobs::parse(&bytes),
            crate::jobs::Entry::Other
        ));
    }
}
