//! A concurrent judge: a `read_committed` reader that tails the valid, curated and DLQ topics
//! for the whole of a run, while faults happen, and notes at once — with topic, partition and
//! offsets — what exactly-once forbids:
//!
//! - a valid record committed twice (the same landing origin and key twice in a valid topic);
//! - a dead letter committed twice (the same `dlq.origin` twice);
//! - a curated version that does not move forward (per key, every curated record must carry a
//!   larger stamp than the one before it).
//!
//! It reads what compaction may later remove from the curated topics, so it sees an emission
//! that a reading at the end would miss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use intake::dedup::Stamp;
use intake::headers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{brokers, eof_consumer};

/// Records taken from one reader's queue before the judge moves on to the next reader.
const DRAIN: usize = 5000;

/// What the judge saw.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Records read from valid topics, curated topics and the DLQ.
    pub valid: u64,
    pub curated: u64,
    pub dlq: u64,
    /// Client errors seen while reading (a restarted broker), counted by text.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Partitions not at their end when the judge stopped (`topic/partition`).
    pub behind: Vec<String>,
    /// Everything forbidden, named, in the order seen.
    pub faults: Vec<String>,
}

/// A running judge; [`Judge::finish`] stops it and returns its verdict.
pub struct Judge {
    stop: Arc<AtomicBool>,
    finishing: Arc<AtomicBool>,
    verdict: Arc<Mutex<Verdict>>,
    thread: Option<JoinHandle<()>>,
}

enum Role {
    Valid,
    Curated,
    Dlq,
}

fn header<'a>(m: &'a rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let h = m.headers()?;
    h.iter()
        .filter(|x| x.key == name)
        .last()
        .and_then(|x| x.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl Judge {
    /// A judge of the simulator source's streams (`e2e::STREAMS`) in `cfg`'s topics.
    pub fn for_sim(cfg: &intake::config::Config) -> Self {
        let names = intake::topics::TopicNames::from_config(cfg);
        let (valid, curated): (Vec<String>, Vec<String>) = super::e2e::STREAMS
            .iter()
            .map(|(st, ..)| (names.valid("sim", st), names.curated("sim", st)))
            .unzip();
        Self::start(&valid, &curated, &names.dlq())
    }

    /// Starts tailing `valid` and `curated` topics and `dlq` from their beginnings. The
    /// topics must exist.
    pub fn start(valid: &[String], curated: &[String], dlq: &str) -> Self {
        // One consumer per topic, so that reaching a partition's end names its topic.
        let mut readers: Vec<(String, Role, BaseConsumer, usize)> = Vec::new();
        let topics = valid
            .iter()
            .map(|t| (t.clone(), Role::Valid))
            .chain(curated.iter().map(|t| (t.clone(), Role::Curated)))
            .chain(std::iter::once((dlq.to_owned(), Role::Dlq)));
        for (t, role) in topics {
            let c = eof_consumer(&brokers(), "judge", "read_committed");
            let parts = intake::kafka::reader::partition_count(&c, &t, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("judge: partitions of {t}: {e}"));
            let mut tpl = TopicPartitionList::new();
            for p in 0..parts {
                tpl.add_partition_offset(&t, p, Offset::Beginning).unwrap();
            }
            c.assign(&tpl).unwrap();
            readers.push((t, role, c, parts as usize));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let finishing = Arc::new(AtomicBool::new(false));
        let verdict = Arc::new(Mutex::new(Verdict::default()));
        let thread = std::thread::spawn({
            let (stop, finishing, verdict) = (stop.clone(), finishing.clone(), verdict.clone());
            move || {
                let mut valid_seen: HashMap<(String, String, String), (i32, i64)> = HashMap::new();
                let mut dlq_seen: HashMap<String, (i32, i64)> = HashMap::new();
                let mut curated_last: HashMap<(String, Vec<u8>), (Stamp, i32, i64)> =
                    HashMap::new();
                // Partitions whose end was reached after their last record (librdkafka reports
                // an end once per reaching it).
                let mut at_end: std::collections::HashSet<(usize, i32)> = Default::default();
                let all: usize = readers.iter().map(|r| r.3).sum();
                let behind = |at_end: &std::collections::HashSet<(usize, i32)>| -> Vec<String> {
                    readers
                        .iter()
                        .enumerate()
                        .flat_map(|(i, r)| (0..r.3 as i32).map(move |p| (i, p, &r.0)))
                        .filter(|(i, p, _)| !at_end.contains(&(*i, *p)))
                        .map(|(_, p, t)| format!("{t}/{p}"))
                        .collect()
                };
                while !stop.load(Ordering::Relaxed) {
                    if finishing.load(Ordering::Relaxed) && at_end.len() == all {
                        break;
                    }
                    // Each reader's queue is drained (what librdkafka has fetched is handed
                    // over without waiting); only a round that found nothing anywhere waits.
                    // Waiting on each reader in turn would cost every idle reader's timeout per
                    // record and leave the judge far behind a busy pipeline.
                    let mut got = 0usize;
                    for (i, (topic, role, c, _)) in readers.iter().enumerate() {
                        for _ in 0..DRAIN {
                            let m = match c.poll(Duration::ZERO) {
                                None => break,
                                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                                    at_end.insert((i, p));
                                    continue;
                                }
                                // Transient client notices (a restarted broker): it reconnects.
                                Some(Err(e)) => {
                                    *verdict
                                        .lock()
                                        .unwrap()
                                        .errors
                                        .entry(format!("{topic}: {e}"))
                                        .or_default() += 1;
                                    continue;
                                }
                                Some(Ok(m)) => m,
                            };
                            got += 1;
                            let (p, o) = (m.partition(), m.offset());
                            at_end.remove(&(i, p));
                            let mut v = verdict.lock().unwrap();
                            match role {
                                Role::Valid => {
                                    v.valid += 1;
                                    if header(&m, headers::KIND).is_some() {
                                        continue; // a sync marker: one copy per partition
                                    }
                                    let origin =
                                        header(&m, headers::ORIGIN).unwrap_or("?").to_owned();
                                    let key = String::from_utf8_lossy(m.key().unwrap_or_default())
                                        .into_owned();
                                    if let Some((p0, o0)) = valid_seen.insert(
                                        (topic.clone(), origin.clone(), key.clone()),
                                        (p, o),
                                    ) {
                                        v.faults.push(format!(
                                        "{topic}: key {key} from {origin} committed twice, at {p0}/{o0} and {p}/{o}"
                                    ));
                                    }
                                }
                                Role::Dlq => {
                                    v.dlq += 1;
                                    let origin =
                                        header(&m, headers::DLQ_ORIGIN).unwrap_or("?").to_owned();
                                    if let Some((p0, o0)) = dlq_seen.insert(origin.clone(), (p, o))
                                    {
                                        v.faults.push(format!(
                                        "{topic}: the dead letter of {origin} committed twice, at {p0}/{o0} and {p}/{o}"
                                    ));
                                    }
                                }
                                Role::Curated => {
                                    v.curated += 1;
                                    let stamp = (|| {
                                        let version = header(&m, headers::VERSION)?.parse().ok()?;
                                        let hash =
                                            u64::from_str_radix(header(&m, headers::HASH)?, 16)
                                                .ok()?;
                                        Some(Stamp::from_parts(
                                            version,
                                            hash,
                                            header(&m, headers::OP) == Some("delete"),
                                        ))
                                    })();
                                    let Some(stamp) = stamp else {
                                        v.faults.push(format!(
                                        "{topic}/{p}/{o}: a curated record without a readable version and hash"
                                    ));
                                        continue;
                                    };
                                    let key = m.key().unwrap_or_default().to_vec();
                                    if let Some((before, p0, o0)) = curated_last
                                        .insert((topic.clone(), key.clone()), (stamp, p, o))
                                        && before >= stamp
                                    {
                                        v.faults.push(format!(
                                        "{topic}: key {} went from {before:?} at {p0}/{o0} to {stamp:?} at {p}/{o}: not forward",
                                        String::from_utf8_lossy(&key)
                                    ));
                                    }
                                }
                            }
                        }
                    }
                    if got == 0 {
                        verdict.lock().unwrap().behind = behind(&at_end);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                verdict.lock().unwrap().behind = behind(&at_end);
            }
        });
        Judge {
            stop,
            finishing,
            verdict,
            thread: Some(thread),
        }
    }

    /// The faults seen so far.
    pub fn faults(&self) -> Vec<String> {
        self.verdict.lock().unwrap().faults.clone()
    }

    /// Reads on until every partition is at its end, or until the judge has read at least
    /// `at_least` (valid, curated, DLQ) records — what a reading of the whole topics found
    /// after the run, so that the judge has seen everything committed by then — for at most
    /// `deadline`; stops, and returns what it saw and whether it got that far.
    pub fn finish(mut self, deadline: Duration, at_least: Option<[u64; 3]>) -> (Verdict, bool) {
        self.finishing.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("the judge runs");
        let until = std::time::Instant::now() + deadline;
        let far_enough = |v: &Verdict| {
            at_least.is_some_and(|[valid, curated, dlq]| {
                v.valid >= valid && v.curated >= curated && v.dlq >= dlq
            })
        };
        let reached = loop {
            if t.is_finished() || far_enough(&self.verdict.lock().unwrap()) {
                break true;
            }
            if std::time::Instant::now() >= until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.stop.store(true, Ordering::Relaxed);
        t.join().expect("the judge's thread");
        (self.verdict.lock().unwrap().clone(), reached)
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
