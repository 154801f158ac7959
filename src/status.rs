//! `intake status`: one screen with what an operator asks first.
//!
//! Cursors and the last sync per stream, consumer-group lag per stage, DLQ counts by kind and
//! stream, and the number of jobs. Everything is read from Kafka (read_committed), so it works
//! from any machine that reaches the brokers, whether or not intake runs there. `--json` prints
//! the same as one JSON document for machines.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::Config;
use crate::fetch::cursor::{CursorState, stream_key};
use crate::headers;
use crate::kafka::{Kafka, reader};
use crate::topics::TopicNames;

/// Lag of one consumer group.
#[derive(Debug, Serialize)]
pub struct GroupLag {
    /// Group name.
    pub group: String,
    /// Records between the committed offsets and the high watermarks (None: nothing committed yet).
    pub lag: Option<i64>,
}

/// The status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Cursor per stream (`source/stream`), None when the stream never synced.
    pub cursors: BTreeMap<String, Option<CursorState>>,
    /// Lag per stage group.
    pub lag: Vec<GroupLag>,
    /// DLQ records by error kind.
    pub dlq_by_kind: BTreeMap<String, u64>,
    /// DLQ records by stream.
    pub dlq_by_stream: BTreeMap<String, u64>,
    /// Jobs in the registry.
    pub jobs: u64,
    /// Quota per token: requests per window from the config.
    pub quotas: BTreeMap<String, String>,
}

/// Gathers the status.
///
/// # Errors
/// Kafka errors.
pub async fn gather(cfg: &Config) -> anyhow::Result<Status> {
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(cfg);
    let keys: Vec<String> = cfg
        .sources
        .iter()
        .flat_map(|s| {
            s.streams
                .iter()
                .map(move |st| stream_key(&s.name, &st.name))
        })
        .collect();
    let found = crate::fetch::stream::restore_cursors(&kafka, &names, &keys).await?;
    let cursors = keys
        .iter()
        .map(|k| (k.clone(), found.get(k).cloned()))
        .collect();
    let quotas = cfg
        .sources
        .iter()
        .filter_map(|s| {
            s.quota.as_ref().map(|q| {
                (
                    s.token_id().to_owned(),
                    format!("{} per {}", q.requests, humantime::format_duration(q.per)),
                )
            })
        })
        .collect();

    let k = kafka.clone();
    let cfg2 = cfg.clone();
    let (lag, dlq_by_kind, dlq_by_stream, jobs) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let names = TopicNames::from_config(&cfg2);
            let valid: Vec<String> = cfg2
                .sources
                .iter()
                .flat_map(|s| s.streams.iter().map(|st| names.valid(&s.name, &st.name)))
                .collect();
            let lag = vec![
                group_lag(&k, &k.group("validate"), &[names.landing()])?,
                group_lag(&k, &k.group("dedup"), &valid)?,
            ];
            let mut by_kind = BTreeMap::new();
            let mut by_stream = BTreeMap::new();
            let c = k.reader_consumer("status-dlq")?;
            let dlq = names.dlq();
            let n = reader::partition_count(&c, &dlq, Duration::from_secs(10))?;
            reader::read_to_end(
                &c,
                &dlq,
                &(0..n).collect::<Vec<_>>(),
                Duration::from_secs(120),
                |m| {
                    use rdkafka::Message;
                    let h = m.headers();
                    let kind = headers::get_str(h, headers::DLQ_KIND)
                        .unwrap_or("unknown")
                        .to_owned();
                    let stream = format!(
                        "{}/{}",
                        headers::get_str(h, headers::SOURCE).unwrap_or("?"),
                        headers::get_str(h, headers::STREAM).unwrap_or("?")
                    );
                    *by_kind.entry(kind).or_insert(0) += 1;
                    *by_stream.entry(stream).or_insert(0) += 1;
                },
            )?;
            let jobs_topic = names.jobs();
            let n = reader::partition_count(&c, &jobs_topic, Duration::from_secs(10))?;
            let mut job_ids = std::collections::HashSet::new();
            reader::read_to_end(
                &c,
                &jobs_topic,
                &(0..n).collect::<Vec<_>>(),
                Duration::from_secs(120),
                |m| {
                    use rdkafka::Message;
                    // Count deltas and replay markers share the topic: count jobs only.
                    if let Some(key) = m.key()
                        && m.payload().is_some_and(crate::serve::jobs::is_job)
                    {
                        job_ids.insert(key.to_vec());
                    }
                },
            )?;
            Ok((lag, by_kind, by_stream, job_ids.len() as u64))
        })
        .await??;
    Ok(Status {
        cursors,
        lag,
        dlq_by_kind,
        dlq_by_stream,
        jobs,
        quotas,
    })
}

fn group_lag(kafka: &Kafka, group: &str, topics: &[String]) -> anyhow::Result<GroupLag> {
    let c: BaseConsumer = kafka.reader_consumer_in_group(group)?;
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let Ok(n) = reader::partition_count(&c, t, Duration::from_secs(5)) else {
            continue;
        };
        for p in 0..n {
            tpl.add_partition(t, p);
        }
    }
    if tpl.count() == 0 {
        return Ok(GroupLag {
            group: group.to_owned(),
            lag: None,
        });
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut lag = 0i64;
    let mut any = false;
    for e in committed.elements() {
        let (_, hi) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
        match e.offset() {
            Offset::Offset(o) => {
                any = true;
                // Every input topic is written in transactions: the committed offset points at
                // the commit marker that follows the last record, which is never delivered.
                lag += (hi - o - 1).max(0);
            }
            _ => lag += hi,
        }
    }
    Ok(GroupLag {
        group: group.to_owned(),
        lag: any.then_some(lag),
    })
}

/// Prints the status for a person.
pub fn print(s: &Status) {
    println!("streams");
    for (k, c) in &s.cursors {
        match c {
            None => println!("  {k:<28} never synced"),
            Some(c) => println!(
                "  {k:<28} {:<11} {:<8} last sync {:<26} high water {:<26} {} records in total",
                c.mode.as_str(),
                if c.complete { "idle" } else { "syncing" },
                c.last_sync_at.as_deref().unwrap_or("-"),
                c.committed_high_water.as_deref().unwrap_or("-"),
                c.total_records
            ),
        }
    }
    println!("quota per token");
    for (t, q) in &s.quotas {
        println!("  {t:<28} {q}");
    }
    println!("consumer lag");
    for g in &s.lag {
        match g.lag {
            Some(l) => println!("  {:<28} {l} records", g.group),
            None => println!("  {:<28} nothing committed yet", g.group),
        }
    }
    println!("dead letters by kind");
    if s.dlq_by_kind.is_empty() {
        println!("  none");
    }
    for (k, n) in &s.dlq_by_kind {
        println!("  {k:<28} {n}");
    }
    println!("dead letters by stream");
    for (k, n) in &s.dlq_by_stream {
        println!("  {k:<28} {n}");
    }
    println!("jobs: {}", s.jobs);
}
