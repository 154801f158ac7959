//! `intake dlq replay`: re-lands chosen dead letters to the landing topic, so validate sees
//! them again (after a schema fix, say), exactly once.
//!
//! # What is re-landed
//!
//! A dead letter is re-landed under the landing header contract, with the landing key and
//! headers it kept (`dlq.*` removed), plus `intake.replay_id` and `intake.replay_of`
//! (`<dlq topic>/<partition>/<offset>`):
//!
//! - **one record of a page or batch** (`dlq.origin` has `#<index>`): wrapped in a page of its
//!   stream (the stream's record selector, e.g. `{"data":[<record>]}`, the record's bytes
//!   unchanged), `intake.kind` = `page` (`batch` for a job's record); the page-position headers
//!   (`intake.cursor`, `intake.next_cursor`, `intake.seq`, `intake.mode`) are dropped: a
//!   replayed page is not part of a sync;
//! - **a whole landing value** (a page that could not be split, a webhook event, a blob-ref whose
//!   blob was missing): as it was, with its own `intake.kind`;
//! - a page over `blob.max_inline_bytes` goes to the blob store and lands as a `blob-ref`, as
//!   fetch does.
//!
//! Skipped, with the reason in the report: a dead letter another stage wrote (dedup's
//! `contract_violation`s come from a valid topic, not from landing), a record too large even
//! for the DLQ (the DLQ kept the reference to its whole claim-checked page), a record whose
//! stream is not in the configuration, a dead letter without a value.
//!
//! # Exactly once
//!
//! The transactional id is one per deployment (`<group_prefix>-dlq-replay`), so a replay fences
//! any other that runs at the same time. After fencing, it reads the replay markers (the
//! [`History`]) and the DLQ, chooses the dead letters that pass the filter and were not
//! replayed before, and then, in **one transaction**: the re-landed records, the count deltas of
//! the jobs they belong to ([`CountDelta::replay`]) and its marker ([`Marker`]: the replay id
//! and the DLQ offsets it re-landed). So a replay is committed whole or not at all, a replay id
//! that is already recorded is a no-op, and a dead letter is re-landed at most once whatever
//! filter or id later replays use. The default replay id is derived from the filter and the
//! chosen offsets, so running the same command twice is a no-op the second time. A record that
//! fails validation again is a new dead letter (a new offset), which a later replay may choose.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Filter, History, META_TIMEOUT, Meta, READ_TIMEOUT, scan};
use crate::blob::{BlobRef, BlobStore};
use crate::config::Config;
use crate::headers::{self, Headers, Kind};
use crate::jobs::CountDelta;
use crate::kafka::txn::{self, Policy};
use crate::kafka::{Outgoing, TxnProducer};
use crate::reprocess::{OneOffKafka, PAGE_POSITION, TypedJobRecord, check_run_id};
use crate::validate::Splitter;

/// Offset ranges per marker record (keeps each well under the 1 MB message limit).
const RANGES_PER_MARKER: usize = 10_000;

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which dead letters.
    pub filter: Filter,
    /// The replay id (default: derived from the filter and the chosen offsets).
    pub replay_id: Option<String>,
    /// A progress bar on a terminal.
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// The replay id (None when nothing was chosen and none was given).
    pub replay_id: Option<String>,
    /// The filter.
    pub filter: Filter,
    /// The landing topic.
    pub landing: String,
    /// Dead letters that pass the filter.
    pub matched: u64,
    /// Of those, re-landed by earlier replays (not chosen again).
    pub already_replayed: u64,
    /// Chosen: matched and not replayed before.
    pub chosen: u64,
    /// Re-landed (committed).
    pub landed: u64,
    /// Of those, landed as `blob-ref`s (over the inline limit).
    pub claim_checked: u64,
    /// Chosen but not re-landed, with why.
    pub skipped: Vec<Skipped>,
    /// Jobs whose counts this replay changed.
    pub jobs: u64,
    /// Set when the replay id had run before (when it ran): nothing was done.
    pub already_done: Option<String>,
}

/// A chosen dead letter that was not re-landed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// `partition/offset` in the DLQ.
    pub position: String,
    /// Its `dlq.error.kind`.
    pub kind: String,
    /// Why.
    pub reason: String,
}

/// A replay's record in `intake.jobs`: which DLQ offsets it re-landed. A large replay writes
/// several parts (`~replay/<id>/<part>`), all in its transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Always [`Marker::TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The replay id.
    pub replay_id: String,
    /// This part (from 0).
    pub part: u32,
    /// Parts in all.
    pub parts: u32,
    /// When the replay ran (RFC 3339).
    pub at: String,
    /// The DLQ topic the offsets are in.
    pub dlq: String,
    /// The filter it ran with.
    pub filter: Filter,
    /// DLQ partition → inclusive offset ranges re-landed.
    pub positions: BTreeMap<i32, Vec<[i64; 2]>>,
}

impl TypedJobRecord for Marker {
    /// The `"type"` of a replay marker.
    const TYPE: &'static str = "replay";
}

impl Marker {
    /// Its key in `intake.jobs`.
    pub fn key(&self) -> String {
        format!("~replay/{}/{}", self.replay_id, self.part)
    }
}

/// Runs a replay.
///
/// # Errors
/// Kafka, blob store or configuration failures; a replay fenced by another that started
/// meanwhile (nothing of it is committed; run it again).
pub async fn run(cfg: &Config, opts: Options) -> anyhow::Result<ReplayReport> {
    if let Some(id) = &opts.replay_id {
        check_run_id("replay", id)?;
    }
    let cfg = cfg.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || Replay::new(&cfg, &opts, handle)?.run()).await?
}

struct Replay<'a> {
    cfg: &'a Config,
    opts: &'a Options,
    /// Names and clients.
    io: OneOffKafka,
    blobs: BlobStore,
    /// Blocks on blob store writes from this (blocking) thread.
    handle: tokio::runtime::Handle,
    splitters: HashMap<(String, String), Result<Splitter, String>>,
}

/// One dead letter made ready to land.
struct Relanded {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Headers,
    claim_checked: bool,
    /// The job it belongs to, and whether it is a whole landing value.
    job: Option<(String, bool)>,
}

impl<'a> Replay<'a> {
    fn new(
        cfg: &'a Config,
        opts: &'a Options,
        handle: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        Ok(Replay {
            cfg,
            opts,
            io: OneOffKafka::open(cfg)?,
            blobs: BlobStore::open(&cfg.blob)?,
            handle,
            splitters: HashMap::new(),
        })
    }

    fn run(mut self) -> anyhow::Result<ReplayReport> {
        let mut report = ReplayReport {
            filter: self.opts.filter.clone(),
            landing: self.io.names.landing(),
            replay_id: self.opts.replay_id.clone(),
            ..ReplayReport::default()
        };
        let producer = self
            .io
            .fencing_producer(txn::Writer::DlqReplay, META_TIMEOUT * 3)?;

        // Fenced every other replay: what is committed now is the whole history.
        let history = History::read(&self.io.kafka, &self.io.names)?;
        if let Some(id) = &self.opts.replay_id
            && let Some((at, _)) = history.replay(id)
        {
            report.already_done = Some(at.to_owned());
            return Ok(report);
        }
        let mut chosen: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        let opts = self.opts;
        let filter = &opts.filter;
        scan(&self.io.kafka, &self.io.names, |m| {
            let meta = Meta::of(m);
            if !filter.matches(&meta) {
                return;
            }
            report.matched += 1;
            if history.replayed_by(meta.partition, meta.offset).is_some() {
                report.already_replayed += 1;
            } else {
                chosen
                    .entry(meta.partition)
                    .or_default()
                    .insert(meta.offset);
            }
        })?;
        report.chosen = chosen.values().map(|s| s.len() as u64).sum();
        if report.chosen == 0 {
            return Ok(report);
        }
        let id = opts
            .replay_id
            .clone()
            .unwrap_or_else(|| derive_id(filter, &self.io.names.dlq(), &chosen));
        report.replay_id = Some(id.clone());
        if let Some((at, _)) = history.replay(&id) {
            report.already_done = Some(at.to_owned());
            return Ok(report);
        }

        // A retriable commit is repeated up to 5 times; nothing landed withdraws the batch.
        let outcome = txn::run_with(&producer, &Policy::retrying(5), |p| {
            self.land(p, &id, &chosen, &mut report)
                .map(|landed| landed.then_some(()))
        });
        if let Some(e) = outcome.into_error() {
            report.landed = 0;
            report.claim_checked = 0;
            report.jobs = 0;
            return Err(anyhow::Error::new(e).context(format!(
                "replay {id}: nothing was committed (another replay may have fenced this one; run it again)"
            )));
        }
        Ok(report)
    }

    /// Sends the chosen dead letters, the job deltas and the marker into the open transaction.
    /// `Ok(false)`: nothing to commit (everything skipped; the caller withdraws the batch).
    fn land(
        &mut self,
        producer: &TxnProducer,
        id: &str,
        chosen: &BTreeMap<i32, BTreeSet<i64>>,
        report: &mut ReplayReport,
    ) -> rdkafka::error::KafkaResult<bool> {
        let dlq = self.io.names.dlq();
        let landing = self.io.names.landing();
        let pb = crate::telemetry::bar(self.opts.progress, report.chosen, "replay", "dead letters");
        let mut landed: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut jobs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut pending: BTreeMap<i32, BTreeSet<i64>> = chosen.clone();
        let c = self.io.kafka.reader_consumer("dlq-replay")?;
        let mut tpl = TopicPartitionList::new();
        for (p, offsets) in chosen {
            if let Some(first) = offsets.first() {
                tpl.add_partition_offset(&dlq, *p, Offset::Offset(*first))?;
            }
        }
        c.assign(&tpl)?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut failure = None;
        while pending.values().any(|s| !s.is_empty()) {
            if Instant::now() > deadline {
                failure = Some(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
                ));
                break;
            }
            let m = match c.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading the DLQ for a replay; retrying");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            if !pending
                .get_mut(&m.partition())
                .is_some_and(|s| s.remove(&m.offset()))
            {
                continue;
            }
            pb.inc(1);
            match self.relanded(&m, id, &dlq) {
                Err(reason) => report.skipped.push(Skipped {
                    position: format!("{}/{}", m.partition(), m.offset()),
                    kind: Meta::of(&m).kind.to_owned(),
                    reason,
                }),
                Ok(r) => {
                    if let Err(e) = producer.send(Outgoing {
                        topic: &landing,
                        key: r.key.as_deref(),
                        payload: Some(&r.value),
                        headers: r.headers.build(),
                        partition: None,
                    }) {
                        failure = Some(e);
                        break;
                    }
                    report.landed += 1;
                    report.claim_checked += u64::from(r.claim_checked);
                    landed.entry(m.partition()).or_default().push(m.offset());
                    if let Some((job, whole)) = r.job {
                        let e = jobs.entry(job).or_default();
                        if whole {
                            e.1 += 1;
                        } else {
                            e.0 += 1;
                        }
                    }
                }
            }
        }
        let _ = c.unassign();
        pb.finish_and_clear();
        if let Some(e) = failure {
            return Err(e);
        }
        if report.landed == 0 {
            return Ok(false);
        }
        let jobs_topic = self.io.names.jobs();
        for (job, (records, whole)) in &jobs {
            let d = CountDelta::replay(job, id, *records, *whole);
            producer.send(Outgoing {
                topic: &jobs_topic,
                key: Some(d.key().as_bytes()),
                payload: Some(&d.to_json()),
                headers: Headers::new().build(),
                partition: None,
            })?;
        }
        report.jobs = jobs.len() as u64;
        for marker in markers(id, &dlq, &self.opts.filter, &landed) {
            producer.send(Outgoing {
                topic: &jobs_topic,
                key: Some(marker.key().as_bytes()),
                payload: Some(&serde_json::to_vec(&marker).expect("serialisable")),
                headers: Headers::new().build(),
                partition: None,
            })?;
        }
        Ok(true)
    }

    /// The landing record for a dead letter, or why it cannot be re-landed.
    fn relanded(
        &mut self,
        m: &BorrowedMessage<'_>,
        id: &str,
        dlq: &str,
    ) -> Result<Relanded, String> {
        let meta = Meta::of(m);
        let origin = meta.origin();
        let landing = self.io.names.landing();
        if origin.as_ref().is_none_or(|o| o.topic != landing) {
            return Err(format!(
                "not rejected from {landing} (dlq.origin {}, dlq.stage {}): only what validate rejected is re-landed",
                meta.origin.unwrap_or("absent"),
                meta.stage.unwrap_or("absent")
            ));
        }
        let value = m.payload().ok_or("the dead letter has no value")?;
        let h = m.headers();
        let index = origin.and_then(|o| o.index);
        let landing_kind = meta.landing_kind.and_then(|k| Kind::parse(k.as_bytes()));
        let job = headers::get_str(h, headers::JOB_ID).map(|j| (j.to_owned(), index.is_none()));
        let mut drop: Vec<&str> = vec![headers::REPLAY_ID, headers::REPLAY_OF];
        let (mut value, mut kind) = match index {
            None => (value.to_vec(), landing_kind),
            Some(_) => {
                if landing_kind == Some(Kind::BlobRef) {
                    let reference = crate::contract::LandedBody::read_blob(h);
                    if reference.is_some()
                        && serde_json::from_slice::<BlobRef>(value).ok() == reference
                    {
                        return Err("the record was over the DLQ's size limit, so the DLQ kept the reference to its whole claim-checked page; re-land that page by hand".into());
                    }
                }
                let (Some(source), Some(stream)) = (meta.source, meta.stream) else {
                    return Err(format!(
                        "no `{}`/`{}` headers: the record's stream is unknown",
                        headers::SOURCE,
                        headers::STREAM
                    ));
                };
                let splitter = self.splitter(source, stream)?;
                let page = wrap(splitter.selector().tokens(), value);
                let same = matches!(splitter.split(&page), Ok(items) if items.len() == 1
                    && items[0].as_ref().map_or_else(|b| b.bytes(), |r| r.bytes()) == value);
                if !same {
                    return Err(format!(
                        "the record does not split back out of a page of `{source}/{stream}`"
                    ));
                }
                // A record of a JSON Lines or CSV page is dead-lettered as JSON (a CSV row as the
                // object validate made of it), so its page is JSON.
                drop.extend([headers::KIND, headers::BLOB, headers::FORMAT]);
                drop.extend(PAGE_POSITION);
                let kind = if landing_kind == Some(Kind::Batch) {
                    Kind::Batch
                } else {
                    Kind::Page
                };
                (page, Some(kind))
            }
        };
        let mut blob = None;
        if value.len() > self.cfg.blob.max_inline_bytes {
            let r = self
                .handle
                .block_on(self.blobs.put(Bytes::from(std::mem::take(&mut value))))
                .map_err(|e| format!("over the inline limit, and the blob store failed: {e}"))?;
            value = serde_json::to_vec(&r).expect("serialisable");
            kind = Some(Kind::BlobRef);
            drop.extend([headers::KIND, headers::BLOB]);
            blob = Some(r);
        }
        let mut out = Headers::new();
        if let Some(h) = h {
            for x in h.iter() {
                if x.key.starts_with("dlq.") || drop.contains(&x.key) {
                    continue;
                }
                if let Some(v) = x.value {
                    out = out.with(x.key, v);
                }
            }
        }
        if drop.contains(&headers::KIND)
            && let Some(k) = kind
        {
            out = out.with(headers::KIND, k.as_str());
        }
        let out = out
            .with_opt(headers::BLOB, blob.as_ref().map(BlobRef::header_value))
            .with(headers::REPLAY_ID, id)
            .with(
                headers::REPLAY_OF,
                format!("{dlq}/{}/{}", m.partition(), m.offset()),
            );
        Ok(Relanded {
            key: m.key().map(<[u8]>::to_vec),
            value,
            headers: out,
            claim_checked: blob.is_some(),
            job,
        })
    }

    fn splitter(&mut self, source: &str, stream: &str) -> Result<Splitter, String> {
        let cfg = self.cfg;
        self.splitters
            .entry((source.to_owned(), stream.to_owned()))
            .or_insert_with(|| {
                let st = cfg
                    .source(source)
                    .and_then(|s| s.streams.iter().find(|x| x.name == stream))
                    .ok_or_else(|| {
                        format!("stream `{source}/{stream}` is not in this configuration")
                    })?;
                Splitter::for_stream(st).map_err(|e| format!("stream `{source}/{stream}`: {e}"))
            })
            .clone()
    }
}

/// `r-` and 16 hex digits of sha256 over the filter, the DLQ topic and the chosen offsets.
fn derive_id(filter: &Filter, dlq: &str, chosen: &BTreeMap<i32, BTreeSet<i64>>) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(filter).expect("serialisable"));
    h.update(b"\n");
    h.update(dlq.as_bytes());
    for (p, offsets) in chosen {
        for o in offsets {
            h.update(format!("\n{p}/{o}").as_bytes());
        }
    }
    format!("r-{}", &hex::encode(h.finalize())[..16])
}

/// A page of one record: the record's bytes inside the objects the selector's tokens name
/// (`/data` → `{"data":[<record>]}`; the empty selector → `[<record>]`).
fn wrap(tokens: &[String], record: &[u8]) -> Vec<u8> {
    let mut page = Vec::with_capacity(record.len() + 16 * tokens.len() + 2);
    for t in tokens {
        page.push(b'{');
        page.extend_from_slice(&serde_json::to_vec(t).expect("a string serialises"));
        page.push(b':');
    }
    page.push(b'[');
    page.extend_from_slice(record);
    page.push(b']');
    page.extend(std::iter::repeat_n(b'}', tokens.len()));
    page
}

/// Sorted offsets → inclusive ranges of consecutive offsets.
fn ranges(offsets: &[i64]) -> Vec<[i64; 2]> {
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<[i64; 2]> = Vec::new();
    for o in sorted {
        match out.last_mut() {
            Some(r) if r[1] + 1 == o => r[1] = o,
            _ => out.push([o, o]),
        }
    }
    out
}

/// The marker records of a replay: its ranges, [`RANGES_PER_MARKER`] per record.
fn markers(id: &str, dlq: &str, filter: &Filter, landed: &BTreeMap<i32, Vec<i64>>) -> Vec<Marker> {
    let all: Vec<(i32, [i64; 2])> = landed
        .iter()
        .flat_map(|(p, offsets)| ranges(offsets).into_iter().map(move |r| (*p, r)))
        .collect();
    let chunks: Vec<&[(i32, [i64; 2])]> = all.chunks(RANGES_PER_MARKER).collect();
    let at = headers::now_rfc3339();
    let parts = chunks.len().max(1) as u32;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut positions: BTreeMap<i32, Vec<[i64; 2]>> = BTreeMap::new();
            for (p, r) in *chunk {
                positions.entry(*p).or_default().push(*r);
            }
            Marker {
                record_type: Marker::TYPE.into(),
                replay_id: id.to_owned(),
                part: i as u32,
                parts,
                at: at.clone(),
                dlq: dlq.to_owned(),
                filter: filter.clone(),
                positions,
            }
        })
        .collect()
}

/// Prints what a replay did.
pub fn print(r: &ReplayReport) {
    let id = r.replay_id.as_deref().unwrap_or("-");
    if let Some(at) = &r.already_done {
        println!("replay {id} already ran at {at}: nothing to do");
        return;
    }
    println!(
        "{} dead letter(s) match ({}); {} replayed before, {} chosen",
        r.matched,
        r.filter.describe(),
        r.already_replayed,
        r.chosen
    );
    if r.chosen == 0 {
        println!("nothing to replay");
        return;
    }
    println!(
        "replay {id}: {} re-landed to {} ({} as blob-refs), {} skipped, counts of {} job(s) updated",
        r.landed,
        r.landing,
        r.claim_checked,
        r.skipped.len(),
        r.jobs
    );
    for s in &r.skipped {
        println!("  skipped dlq {} ({}): {}", s.position, s.kind, s.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_wrapped_in_a_page_that_splits_back_to_its_bytes() {
        let record = br#"{"id": "c-1", "version":3, "status":"enabled"}"#;
        for (selector, expected) in [
            (
                "/data",
                format!(r#"{{"data":[{}]}}"#, std::str::from_utf8(record).unwrap()),
            ),
            ("", format!("[{}]", std::str::from_utf8(record).unwrap())),
            (
                "/a~1b/0",
                format!(
                    r#"{{"a/b":{{"0":[{}]}}}}"#,
                    std::str::from_utf8(record).unwrap()
                ),
            ),
        ] {
            let s = Splitter::new(selector, "/id", Some("/version")).unwrap();
            let page = wrap(s.selector().tokens(), record);
            assert_eq!(String::from_utf8(page.clone()).unwrap(), expected);
            let items = s.split(&page).unwrap();
            assert_eq!(items.len(), 1, "{selector}");
            let r = items[0].as_ref().unwrap();
            assert_eq!(
                (r.bytes(), r.key.as_str(), r.version),
                (&record[..], "c-1", Some(3))
            );
        }
    }

    #[test]
    fn offsets_become_ranges_and_markers_split_large_sets() {
        assert_eq!(
            ranges(&[5, 3, 4, 9, 10, 12, 3]),
            [[3, 5], [9, 10], [12, 12]]
        );
        assert!(ranges(&[]).is_empty());
        let landed = BTreeMap::from([
            (
                0,
                (0..(RANGES_PER_MARKER as i64 + 5))
                    .map(|i| i * 2)
                    .collect::<Vec<_>>(),
            ),
            (1, vec![7, 8]),
        ]);
        let ms = markers("r-x", "t.dlq", &Filter::default(), &landed);
        assert_eq!(ms.len(), 2);
        assert!(ms.iter().all(|m| m.parts == 2 && m.replay_id == "r-x"));
        assert_eq!(ms[0].key(), "~replay/r-x/0");
        let total: usize = ms
            .iter()
            .flat_map(|m| m.positions.values())
            .map(Vec::len)
            .sum();
        assert_eq!(total, RANGES_PER_MARKER + 5 + 1);
        let json = serde_json::to_vec(&ms[1]).unwrap();
        assert_eq!(Marker::parse(&json).as_ref(), Some(&ms[1]));
        assert_eq!(crate::jobs::parse(&json), crate::jobs::Entry::Other);
        assert_eq!(Marker::parse(br#"{"type":"counts"}"#), None);
    }

    #[test]
    fn replay_ids_are_derived_from_the_filter_and_the_offsets() {
        let f = Filter {
            kind: Some("unknown_enum".into()),
            ..Filter::default()
        };
        let a = BTreeMap::from([(0, BTreeSet::from([1, 2]))]);
        let b = BTreeMap::from([(0, BTreeSet::from([1, 3]))]);
        let id = derive_id(&f, "t.dlq", &a);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("r-"));
        assert_eq!(id, derive_id(&f, "t.dlq", &a));
        assert_ne!(id, derive_id(&f, "t.dlq", &b));
        assert_ne!(id, derive_id(&Filter::default(), "t.dlq", &a));
        assert_ne!(id, derive_id(&f, "u.dlq", &a));
    }
}
