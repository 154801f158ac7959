//! The pipeline's ledger, judged from the committed topics alone, before anything can repair
//! them: a full sync re-lands every page of a stream with delete detection, which would put
//! back a record that validate or dedup lost during a fault phase. The end-to-end tests judge
//! this ledger while fetch is stopped, and only then let a final sync run.
//!
//! - **landing → valid + DLQ**: every record of every committed landing page, job batch and
//!   claim-checked page (split here with serde_json, not with intake's splitter), and every
//!   landed webhook event, is in exactly one place: a valid topic (by `intake.origin` and key)
//!   or the DLQ (by `dlq.origin` with the record's index, or the whole landing record).
//!   Nothing in either comes from anywhere else.
//! - **valid → curated**: per key, the curated topic's last record is the largest stamp the
//!   valid topics hold for that key, or a tombstone at least that large (a delete detected by
//!   a full sync); no curated key is missing from the valid topics.

use std::collections::{BTreeMap, HashMap};

use intake::config::Config;
use intake::dedup::Stamp;
use intake::headers;
use intake::topics::TopicNames;

use super::{Rec, read_all};

/// What the ledger judged and every fault it found, each named with where it was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// Records of landed pages, batches and events judged.
    pub landed: usize,
    /// Keys whose curated record was judged against the valid topics.
    pub keys: usize,
    pub faults: Vec<String>,
    /// (landing origin, key) of records in neither a valid topic nor the DLQ.
    pub lost: std::collections::BTreeSet<(String, String)>,
    /// (curated topic, key) of keys whose curated record is older than their latest valid one.
    pub stale: std::collections::BTreeSet<(String, String)>,
}

impl Ledger {
    pub fn exact(&self) -> bool {
        self.faults.is_empty()
    }

    /// The faults, at most `n` of them, one per line.
    pub fn summary(&self, n: usize) -> String {
        let mut s = format!(
            "ledger: {} landed records, {} curated keys judged, {} faults",
            self.landed,
            self.keys,
            self.faults.len()
        );
        for f in self.faults.iter().take(n) {
            s.push_str("\n  ");
            s.push_str(f);
        }
        if self.faults.len() > n {
            s.push_str(&format!("\n  … and {} more", self.faults.len() - n));
        }
        s
    }
}

/// What one committed landing record calls for.
enum Expected {
    /// A page or batch: the key and the value hash (16 hex digits) of each record, by index.
    Records(Vec<(String, String)>),
    /// A webhook event: one record, its key not checked here; the hash of its value.
    Event(String),
    /// A landing record that cannot be split: one dead letter for the whole of it; the hash
    /// of its value.
    Whole(String),
}

/// The value hash the quiet DLQ keys a dead letter by (`intake.dlq-index`'s `hash`).
fn hash_of(bytes: &[u8]) -> String {
    format!("{:016x}", intake::dedup::content_hash(bytes))
}

/// The raw bytes of the records at `pointer` in `page` (each element's text, surrounding
/// whitespace excluded, as the splitter cuts it), found with serde_json's `RawValue`.
fn raw_records<'a>(page: &'a [u8], pointer: &str) -> Option<Vec<&'a str>> {
    use serde_json::value::RawValue;
    let mut at: &RawValue = serde_json::from_slice(page).ok()?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match serde_json::from_str::<BTreeMap<String, &RawValue>>(at.get()) {
            Ok(mut members) => members.remove(&token)?,
            Err(_) => {
                let items: Vec<&RawValue> = serde_json::from_str(at.get()).ok()?;
                *items.get(token.parse::<usize>().ok()?)?
            }
        };
    }
    let items: Vec<&RawValue> = serde_json::from_str(at.get()).ok()?;
    Some(items.into_iter().map(RawValue::get).collect())
}

/// Where one stream's records are in its pages.
struct Pointers {
    records: String,
    primary_key: String,
}

fn key_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn split(page: &[u8], value: &[u8], p: &Pointers) -> Expected {
    let whole = || Expected::Whole(hash_of(value));
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(page) else {
        return whole();
    };
    let Some(serde_json::Value::Array(items)) = v.pointer(&p.records) else {
        return whole();
    };
    let raw = raw_records(page, &p.records).unwrap_or_default();
    Expected::Records(
        items
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    r.pointer(&p.primary_key).map(key_text).unwrap_or_default(),
                    raw.get(i)
                        .map(|t| hash_of(t.as_bytes()))
                        .unwrap_or_default(),
                )
            })
            .collect(),
    )
}

/// A curated or valid record's stamp, from its headers.
fn stamp(r: &Rec) -> Option<Stamp> {
    let version = r.header(headers::VERSION)?.parse().ok()?;
    let hash = u64::from_str_radix(r.header(headers::HASH)?, 16).ok()?;
    Some(Stamp::from_parts(
        version,
        hash,
        r.header(headers::OP) == Some("delete"),
    ))
}

/// Judges the ledger of `cfg`'s pipeline as its topics hold it now (call it once the input has
/// stopped and the stages have drained, or poll it until it holds).
pub async fn judge(cfg: &Config) -> Ledger {
    let names = TopicNames::from_config(cfg);
    let landing_topic = names.landing();
    let mut pointers: HashMap<(String, String), Pointers> = HashMap::new();
    let mut streams = Vec::new();
    for src in &cfg.sources {
        for st in &src.streams {
            pointers.insert(
                (src.name.clone(), st.name.clone()),
                Pointers {
                    records: st.records.clone(),
                    // String keys (the only form the ledger judges) have one pointer.
                    primary_key: st.primary_key.first().to_owned(),
                },
            );
            streams.push((src.name.clone(), st.name.clone()));
        }
    }
    let (landing, valid, dlq, curated) = tokio::task::spawn_blocking({
        let names = names.clone();
        let streams = streams.clone();
        move || {
            // Each stream's topic (named by `topic`) with its committed records.
            let per_stream = |topic: &dyn Fn(&str, &str) -> String| -> Vec<(String, Vec<Rec>)> {
                streams
                    .iter()
                    .map(|(src, st)| {
                        let t = topic(src, st);
                        let recs = read_all(&t, "read_committed");
                        (t, recs)
                    })
                    .collect()
            };
            let landing = read_all(&names.landing(), "read_committed");
            let valid = per_stream(&|src, st| names.valid(src, st));
            let dlq = read_all(&names.dlq(), "read_committed");
            let curated = per_stream(&|src, st| names.curated(src, st));
            (landing, valid, dlq, curated)
        }
    })
    .await
    .unwrap();

    let blobs = intake::blob::BlobStore::open(&cfg.blob).expect("the blob store opens");
    let mut out = Ledger::default();
    let mut expected: BTreeMap<String, (String, Expected)> = BTreeMap::new();
    // Landing records re-landed by `intake dlq replay`: their failures are never quieted.
    let mut replayed = std::collections::BTreeSet::new();
    // The hash of each landing value: a record too large for the DLQ is kept there by
    // reference (its dead letter's value is the landing value it came from).
    let mut landing_hash: BTreeMap<String, String> = BTreeMap::new();
    for r in &landing {
        let at = format!("{landing_topic}/{}/{}", r.partition, r.offset);
        let kind = r.header(headers::KIND).unwrap_or("?");
        let p = || {
            let key = (
                r.header(headers::SOURCE).unwrap_or("?").to_owned(),
                r.header(headers::STREAM).unwrap_or("?").to_owned(),
            );
            pointers.get(&key)
        };
        let value = r.value.as_deref().unwrap_or_default();
        if r.header(headers::REPLAY_ID).is_some() {
            replayed.insert(at.clone());
        }
        landing_hash.insert(at.clone(), hash_of(value));
        let e = match kind {
            "event" => Expected::Event(hash_of(value)),
            "page" | "batch" => match p() {
                Some(p) => split(value, value, p),
                None => Expected::Whole(hash_of(value)),
            },
            "blob-ref" => {
                let reference = r
                    .header(headers::BLOB)
                    .and_then(intake::blob::BlobRef::parse_header)
                    .or_else(|| {
                        serde_json::from_slice(r.value.as_deref().unwrap_or_default()).ok()
                    });
                match (reference, p()) {
                    (Some(reference), Some(p)) => match blobs.get(&reference).await {
                        Ok(page) => split(&page, value, p),
                        Err(e) => {
                            out.faults
                                .push(format!("{at}: its claim-checked page cannot be read: {e}"));
                            continue;
                        }
                    },
                    _ => Expected::Whole(hash_of(value)),
                }
            }
            _ => continue, // sync markers: copied, not judged here
        };
        out.landed += match &e {
            Expected::Records(keys) => keys.len(),
            Expected::Event(_) | Expected::Whole(_) => 1,
        };
        let stream = format!(
            "{}/{}",
            r.header(headers::SOURCE).unwrap_or("?"),
            r.header(headers::STREAM).unwrap_or("?")
        );
        expected.insert(at, (stream, e));
    }

    // What the valid topics and the DLQ hold, by landing origin.
    let mut valid_at: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut latest: BTreeMap<(String, String), Stamp> = BTreeMap::new();
    for (topic, recs) in &valid {
        for r in recs {
            if r.header(headers::KIND).is_some() {
                continue; // a sync marker
            }
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            match r.header(headers::ORIGIN) {
                Some(o) => valid_at.entry(o.to_owned()).or_default().push(key.clone()),
                None => out.faults.push(format!(
                    "{topic}/{}/{}: a valid record without `{}`",
                    r.partition,
                    r.offset,
                    headers::ORIGIN
                )),
            }
            match stamp(r) {
                Some(s) => {
                    let e = latest.entry((topic.clone(), key)).or_insert(s);
                    *e = (*e).max(s);
                }
                None => out.faults.push(format!(
                    "{topic}/{}/{}: a valid record without a readable version and hash",
                    r.partition, r.offset
                )),
            }
        }
    }
    let mut dead_at: BTreeMap<String, Vec<Option<usize>>> = BTreeMap::new();
    // The quiet DLQ: dead letters by (stream, value hash), and the landed failures with no dead
    // letter of their own (repeats), which its index must count.
    let mut dead_by_value: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut repeats: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    let dlq_prefix = format!("{landing_topic}/");
    for r in &dlq {
        let Some(origin) = r.header(headers::DLQ_ORIGIN) else {
            out.faults.push(format!(
                "dlq/{}/{}: a dead letter without `{}`",
                r.partition,
                r.offset,
                headers::DLQ_ORIGIN
            ));
            continue;
        };
        if !origin.starts_with(&dlq_prefix) {
            continue; // dedup's dead letters come from a valid topic
        }
        let (at, index) = match origin.split_once('#') {
            Some((at, i)) => (at, i.parse().ok()),
            None => (origin, None),
        };
        dead_at.entry(at.to_owned()).or_default().push(index);
        if !replayed.contains(at) {
            let stream = format!(
                "{}/{}",
                r.header(headers::SOURCE).unwrap_or("?"),
                r.header(headers::STREAM).unwrap_or("?")
            );
            // The quiet DLQ knows a failure by the record's own bytes, however it is kept.
            let mut hash = hash_of(r.value.as_deref().unwrap_or_default());
            if let (Some(i), Some((_, Expected::Records(keys)))) = (index, expected.get(at))
                && landing_hash.get(at) == Some(&hash)
                && let Some((_, record)) = keys.get(i)
            {
                hash = record.clone();
            }
            *dead_by_value.entry((stream, hash)).or_default() += 1;
        }
    }

    for (at, (stream, e)) in &expected {
        let valid = valid_at.remove(at).unwrap_or_default();
        let dead = dead_at.remove(at).unwrap_or_default();
        let whole = dead.iter().filter(|i| i.is_none()).count();
        // With the quiet DLQ on, a failure may have no dead letter of its own (a repeat).
        let quiet = !cfg.dlq.quiet_for.is_zero() && !replayed.contains(at);
        let mut repeat = |hash: &str, key: &str| {
            repeats
                .entry((stream.clone(), hash.to_owned()))
                .or_default()
                .push((at.clone(), key.to_owned()));
        };
        match e {
            Expected::Whole(hash) if quiet && (whole, valid.len(), dead.len()) == (0, 0, 0) => {
                repeat(hash, "(whole)");
            }
            Expected::Event(hash) if quiet && valid.len() + dead.len() == 0 => {
                repeat(hash, "(event)");
            }
            Expected::Whole(_) => {
                if (whole, valid.len(), dead.len()) != (1, 0, 1) {
                    out.faults.push(format!(
                        "{at}: cannot be split, so one dead letter for it is due; found {} valid and {} dead letters",
                        valid.len(),
                        dead.len()
                    ));
                }
            }
            Expected::Event(_) => {
                if valid.len() + dead.len() != 1 {
                    out.faults.push(format!(
                        "{at}: a webhook event is due once in a valid topic or the DLQ; found {} valid and {} dead letters",
                        valid.len(),
                        dead.len()
                    ));
                }
            }
            Expected::Records(keys) => {
                if whole > 0 {
                    if (whole, valid.len(), dead.len()) != (1, 0, 1) {
                        out.faults.push(format!(
                            "{at}: dead-lettered whole {whole} times next to {} valid and {} per-record dead letters",
                            valid.len(),
                            dead.len() - whole
                        ));
                    }
                    continue;
                }
                let mut due: BTreeMap<&str, i64> = BTreeMap::new();
                for (k, _) in keys {
                    *due.entry(k.as_str()).or_default() += 1;
                }
                let mut seen_index = std::collections::BTreeSet::new();
                for i in dead.iter().flatten() {
                    match keys.get(*i) {
                        Some(k) if seen_index.insert(*i) => *due.entry(k.0.as_str()).or_default() -= 1,
                        Some(_) => out.faults.push(format!("{at}#{i}: dead-lettered twice")),
                        None => out.faults.push(format!("{at}#{i}: a dead letter for a record the page does not have ({} records)", keys.len())),
                    }
                }
                for k in &valid {
                    *due.entry(k.as_str()).or_default() -= 1;
                }
                for (k, n) in due {
                    match n {
                        0 => {}
                        n if n > 0 && quiet => {
                            // Failures with no dead letter here: repeats, if the quiet DLQ
                            // counted them (checked below, by value).
                            let open = keys
                                .iter()
                                .enumerate()
                                .filter(|(i, (key, _))| key == k && !seen_index.contains(i));
                            for (_, (_, hash)) in open.take(n as usize) {
                                repeat(hash, k);
                            }
                        }
                        n if n > 0 => {
                            out.lost.insert((at.clone(), k.to_owned()));
                            out.faults.push(format!(
                                "{at}: key {k} is in neither a valid topic nor the DLQ ({n}×): lost"
                            ));
                        }
                        n => out
                            .faults
                            .push(format!("{at}: key {k} is there {}× too often: doubled", -n)),
                    }
                }
            }
        }
    }
    for (at, keys) in valid_at {
        out.faults.push(format!(
            "{at}: {} valid records from no committed landing record (keys {keys:?})",
            keys.len()
        ));
    }
    // The quiet DLQ's index, read back as JSON (its latest entry per key): per (stream, value
    // hash) the failures counted must be the dead letters of that value plus its repeats.
    let index = {
        let topic = names.dlq_index();
        tokio::task::spawn_blocking(move || read_all(&topic, "read_committed"))
            .await
            .unwrap()
    };
    let mut entries: BTreeMap<String, (i64, serde_json::Value)> = BTreeMap::new();
    for r in &index {
        let Some(Ok(v)) = r
            .value
            .as_deref()
            .map(serde_json::from_slice::<serde_json::Value>)
        else {
            out.faults.push(format!(
                "dlq-index/{}/{}: not a JSON entry",
                r.partition, r.offset
            ));
            continue;
        };
        let e = entries
            .entry(String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
            .or_insert((r.offset, v.clone()));
        if r.offset >= e.0 {
            *e = (r.offset, v);
        }
    }
    let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, v) in entries.values() {
        let stream = format!(
            "{}/{}",
            v["source"].as_str().unwrap_or("?"),
            v["stream"].as_str().unwrap_or("?")
        );
        let hash = v["hash"].as_str().unwrap_or("?").to_owned();
        *counted.entry((stream, hash)).or_default() += v["occurrences"].as_u64().unwrap_or(0);
    }
    let mut groups: std::collections::BTreeSet<(String, String)> =
        repeats.keys().cloned().collect();
    groups.extend(counted.keys().cloned());
    for g in groups {
        let dead = dead_by_value.get(&g).copied().unwrap_or(0);
        let again = repeats.get(&g).map_or(&[][..], Vec::as_slice);
        let due = dead + again.len() as u64;
        let got = counted.get(&g).copied().unwrap_or(0);
        let (stream, hash) = &g;
        if got < due {
            // Which of a value's identical occurrences went uncounted no topic can tell; the
            // earliest landed are named (a value's first occurrence is always written, so
            // these are exact unless a repeat, not a first occurrence, was lost).
            let mut named: Vec<&(String, String)> = again.iter().collect();
            named.sort_by_key(|(at, _)| {
                let mut parts = at.rsplitn(3, '/');
                let offset: i64 = parts.next().and_then(|o| o.parse().ok()).unwrap_or(0);
                let partition: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                (partition, offset)
            });
            for (at, key) in named.into_iter().take((due - got) as usize) {
                out.lost.insert((at.clone(), key.clone()));
                out.faults.push(format!(
                    "{at}: key {key} ({stream}, value {hash}) is in neither a valid topic nor the DLQ, nor counted by the dlq-index ({dead} dead letters, {} repeats, {got} counted): lost",
                    again.len()
                ));
            }
        } else if got > due {
            out.faults.push(format!(
                "{stream} value {hash}: the dlq-index counts {got} failures, {} more than landed ({dead} dead letters, {} repeats)",
                got - due,
                again.len()
            ));
        }
    }
    for (at, idx) in dead_at {
        out.faults.push(format!(
            "{at}: {} dead letters from no committed landing record",
            idx.len()
        ));
    }

    // valid → curated: the last curated record per key against the largest valid stamp.
    for ((valid_topic, _), (curated_topic, recs)) in valid.iter().zip(&curated) {
        let mut last: BTreeMap<String, (Stamp, String)> = BTreeMap::new();
        let mut sorted: Vec<&Rec> = recs.iter().collect();
        sorted.sort_by_key(|r| (r.partition, r.offset));
        for r in sorted {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let at = format!("{curated_topic}/{}/{}", r.partition, r.offset);
            match stamp(r) {
                Some(s) => {
                    last.insert(key, (s, at));
                }
                None => out.faults.push(format!(
                    "{at}: a curated record without a readable version and hash"
                )),
            }
        }
        let due: BTreeMap<&String, &Stamp> = latest
            .iter()
            .filter(|((t, _), _)| t == valid_topic)
            .map(|((_, k), s)| (k, s))
            .collect();
        out.keys += due.len();
        for (key, want) in &due {
            match last.get(*key) {
                None => out.faults.push(format!(
                    "{curated_topic}: key {key} is valid but was never curated: lost"
                )),
                Some((got, _)) if got == *want => {}
                // A delete detected by a full sync.
                Some((got, _)) if got.is_delete() && got > *want => {}
                Some((got, at)) => {
                    out.stale.insert((curated_topic.clone(), (*key).clone()));
                    out.faults.push(format!(
                        "{at}: key {key} is curated at {got:?}, its latest valid record is {want:?}: stale"
                    ));
                }
            }
        }
        for (key, (_, at)) in &last {
            if !due.contains_key(key) {
                out.faults.push(format!(
                    "{at}: key {key} is curated but in no valid record: wrong"
                ));
            }
        }
    }
    out
}

/// Judges the ledger until it holds, or until it has not changed for `quiet` (the stages have
/// stopped working while it still fails), or 10 × `quiet` in all; returns the last verdict.
pub async fn settle(cfg: &Config, quiet: std::time::Duration) -> Ledger {
    let started = std::time::Instant::now();
    let mut last = judge(cfg).await;
    let mut since = std::time::Instant::now();
    while !last.exact() && since.elapsed() < quiet && started.elapsed() < quiet * 10 {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = judge(cfg).await;
        if now != last {
            since = std::time::Instant::now();
        }
        last = now;
    }
    last
}
