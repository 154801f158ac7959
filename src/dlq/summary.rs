//! `intake dlq summary`: the DLQ by stream, kind and field.

use std::collections::BTreeMap;

use rdkafka::message::Message;
use serde::Serialize;
use time::OffsetDateTime;

use super::{Filter, History, Meta, rfc3339, scan};
use crate::config::Config;
use crate::kafka::Kafka;
use crate::topics::TopicNames;

/// Characters of a sample value shown.
const SAMPLE_CHARS: usize = 300;

/// The summary document (`--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The DLQ topic.
    pub topic: String,
    /// Dead letters that pass the filter.
    pub total: u64,
    /// Of those, how many an earlier `intake dlq replay` re-landed.
    pub replayed: u64,
    /// Failures the dead letters stand for: each once, plus the repeats counted on it instead
    /// of being written again (the quiet DLQ, `dlq.quiet_for`).
    pub occurrences: u64,
    /// By `source/stream`.
    pub by_stream: BTreeMap<String, u64>,
    /// By `dlq.error.kind`.
    pub by_kind: BTreeMap<String, u64>,
    /// By stream, kind and field, in that order.
    pub groups: Vec<Group>,
}

/// One stream, kind and field.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `source/stream`.
    pub stream: String,
    /// `dlq.error.kind`.
    pub kind: String,
    /// `dlq.error.field` (None: the record or page as a whole).
    pub field: Option<String>,
    /// Dead letters in the group.
    pub count: u64,
    /// Of those, replayed.
    pub replayed: u64,
    /// Failures they stand for, repeats included.
    pub occurrences: u64,
    /// The earliest `dlq.at` (RFC 3339).
    pub first_seen: String,
    /// The latest `dlq.at`, or the latest repeat when later.
    pub last_seen: String,
    /// The first dead letter of the group.
    pub sample: Sample,
}

/// One dead letter, shortened.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// `partition/offset` in the DLQ.
    pub position: String,
    /// `dlq.origin`.
    pub origin: Option<String>,
    /// `dlq.error.detail`.
    pub detail: Option<String>,
    /// The value's first characters (lossy UTF-8).
    pub value: String,
}

/// `source/stream`, kind, field.
type GroupKey = (String, String, Option<String>);

#[derive(Default)]
struct Acc {
    count: u64,
    replayed: u64,
    repeats: u64,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    sample: Option<Sample>,
}

/// Reads the DLQ and the replay markers and groups the dead letters that pass `filter`.
///
/// # Errors
/// Kafka errors.
pub async fn gather(cfg: &Config, filter: &Filter) -> anyhow::Result<Summary> {
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(cfg);
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || summarise(&kafka, &names, &filter)).await?
}

fn summarise(kafka: &Kafka, names: &TopicNames, filter: &Filter) -> anyhow::Result<Summary> {
    let history = History::read(kafka, names)?;
    let mut s = Summary {
        topic: names.dlq(),
        ..Summary::default()
    };
    let mut groups: BTreeMap<GroupKey, Acc> = BTreeMap::new();
    scan(kafka, names, |m| {
        let meta = Meta::of(m);
        if !filter.matches(&meta) {
            return;
        }
        let replayed = history.replayed_by(meta.partition, meta.offset).is_some();
        let stream = meta.stream_key();
        s.total += 1;
        s.replayed += u64::from(replayed);
        *s.by_stream.entry(stream.clone()).or_default() += 1;
        *s.by_kind.entry(meta.kind.to_owned()).or_default() += 1;
        let acc = groups
            .entry((stream, meta.kind.to_owned(), meta.field.map(str::to_owned)))
            .or_default();
        acc.count += 1;
        acc.replayed += u64::from(replayed);
        if let Some(at) = meta.at {
            acc.first = Some(acc.first.map_or(at, |f| f.min(at)));
            acc.last = Some(acc.last.map_or(at, |l| l.max(at)));
        }
        if acc.sample.is_none() {
            acc.sample = Some(Sample {
                position: format!("{}/{}", meta.partition, meta.offset),
                origin: meta.origin.map(str::to_owned),
                detail: meta.detail.map(str::to_owned),
                value: preview(m.payload().unwrap_or_default(), SAMPLE_CHARS),
            });
        }
    })?;
    // The repeats counted on the groups' dead letters (an index that cannot be read, as before
    // `intake topics apply` created it, counts none).
    // The index is compacted: until the cleaner runs it holds every count an entry went
    // through, and only the latest of each key counts (a key stays in one partition).
    let mut latest: BTreeMap<Vec<u8>, crate::contract::DlqRepeat> = BTreeMap::new();
    let read = super::scan_topic(kafka, &names.dlq_index(), |m| {
        let Some(key) = m.key() else { return };
        match m.payload().map(crate::contract::DlqRepeat::parse) {
            Some(Ok(e)) => {
                latest.insert(key.to_vec(), e);
            }
            None => {
                latest.remove(key);
            }
            Some(Err(_)) => {}
        }
    });
    if let Err(e) = read {
        tracing::warn!(topic = %names.dlq_index(), error = %e, "the repeats of dead letters cannot be read; occurrences count dead letters only");
    }
    let mut repeats: BTreeMap<GroupKey, (u64, Option<OffsetDateTime>)> = BTreeMap::new();
    for e in latest.into_values() {
        let key = (
            crate::contract::stream_key(&e.source, &e.stream),
            e.kind,
            e.field,
        );
        let r = repeats.entry(key).or_default();
        r.0 += e.occurrences.saturating_sub(1);
        if let Ok(t) =
            OffsetDateTime::parse(&e.last_seen, &time::format_description::well_known::Rfc3339)
        {
            r.1 = Some(r.1.map_or(t, |l| l.max(t)));
        }
    }
    for (key, acc) in &mut groups {
        if let Some((n, last)) = repeats.get(key) {
            acc.repeats = *n;
            if let Some(t) = last {
                acc.last = Some(acc.last.map_or(*t, |l| l.max(*t)));
            }
        }
    }
    s.occurrences = s.total + groups.values().map(|a| a.repeats).sum::<u64>();
    s.groups = groups
        .into_iter()
        .map(|((stream, kind, field), a)| Group {
            stream,
            kind,
            field,
            count: a.count,
            replayed: a.replayed,
            occurrences: a.count + a.repeats,
            first_seen: rfc3339(a.first),
            last_seen: rfc3339(a.last),
            sample: a.sample.expect("a group has at least one dead letter"),
        })
        .collect();
    Ok(s)
}

/// The first `chars` characters of a value (lossy UTF-8), with `…` when cut.
pub(crate) fn preview(value: &[u8], chars: usize) -> String {
    let end = value.len().min(chars.saturating_mul(4));
    let text = String::from_utf8_lossy(&value[..end]);
    let mut out: String = text.chars().take(chars).collect();
    if end < value.len() || text.chars().count() > chars {
        out.push('…');
    }
    out
}

/// Prints the summary for a person.
pub fn print(s: &Summary, filter: &Filter) {
    println!(
        "{}: {} dead letter(s) ({}), {} of them replayed; {} failure(s) in all, repeats of a dead letter counted on it",
        s.topic,
        s.total,
        filter.describe(),
        s.replayed,
        s.occurrences
    );
    if s.total == 0 {
        return;
    }
    println!("by stream");
    for (k, n) in &s.by_stream {
        println!("  {k:<32} {n}");
    }
    println!("by kind");
    for (k, n) in &s.by_kind {
        println!("  {k:<32} {n}");
    }
    println!("by stream, kind and field");
    println!(
        "  {:<24} {:<16} {:<20} {:>7} {:>8} {:>11}  {:<30}  {:<30}",
        "stream", "kind", "field", "count", "replayed", "occurrences", "first seen", "last seen"
    );
    for g in &s.groups {
        println!(
            "  {:<24} {:<16} {:<20} {:>7} {:>8} {:>11}  {:<30}  {:<30}",
            g.stream,
            g.kind,
            g.field.as_deref().unwrap_or("-"),
            g.count,
            g.replayed,
            g.occurrences,
            g.first_seen,
            g.last_seen
        );
        println!(
            "      sample dlq {} (from {}): {}",
            g.sample.position,
            g.sample.origin.as_deref().unwrap_or("?"),
            g.sample.detail.as_deref().unwrap_or("-")
        );
        println!("        {}", g.sample.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_characters() {
        assert_eq!(preview(b"{\"a\":1}", 300), "{\"a\":1}");
        assert_eq!(preview("ééé".as_bytes(), 2), "éé…");
        assert_eq!(preview(b"\xff\xfe", 10), "\u{fffd}\u{fffd}");
        assert_eq!(preview(b"", 10), "");
    }
}
