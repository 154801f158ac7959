//! DLQ triage: what is in `intake.dlq`, and getting it out again once the cause is fixed.
//!
//! | module      | what lives there |
//! |-------------|------------------|
//! | [`summary`] | `intake dlq summary`: counts by stream, kind and field, first and last seen, a sample per group |
//! | [`show`]    | `intake dlq show`: the dead letters themselves, headers, detail and value |
//! | [`replay`]  | `intake dlq replay`: re-lands chosen dead letters in one transaction, idempotent by replay id |
//! | [`propose`] | `intake schema propose`: a candidate schema from a stream's dead letters, checked with the registry |
//!
//! Every command reads the DLQ with `read_committed` to its end, through [`scan`], and selects
//! with a [`Filter`] (`--stream`, `--kind`, `--field`). The header names and the `dlq.origin`
//! format are those of the writer ([`crate::headers`], [`crate::validate::reject`]).
//!
//! Replays are remembered in `intake.jobs` (markers `~replay/<id>/<part>`, see
//! [`replay::Marker`]), so every command knows which dead letters were already replayed and by
//! which replay ([`History`]).

pub mod propose;
pub mod replay;
pub mod show;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::contract::DeadLetter;
use crate::headers;
use crate::kafka::{Kafka, reader};
use crate::reprocess::TypedJobRecord;
use crate::topics::TopicNames;
use crate::validate::reject::Origin;

/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Metadata calls wait this long.
const META_TIMEOUT: Duration = Duration::from_secs(10);

/// Which dead letters a command looks at. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Filter {
    /// Only this stream: `source/stream`, or the stream name alone.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Only this `dlq.error.kind` (`unknown_enum`, `unknown_field`, `type_mismatch`, ...).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only this `dlq.error.field` (`status`, `items[0].sku`, ...).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Filter {
    /// Whether a dead letter passes.
    pub fn matches(&self, m: &Meta<'_>) -> bool {
        let stream_ok = self
            .stream
            .as_deref()
            .is_none_or(|want| match want.split_once('/') {
                Some((src, st)) => m.source == Some(src) && m.stream == Some(st),
                None => m.stream == Some(want),
            });
        stream_ok
            && self.kind.as_deref().is_none_or(|k| m.kind == k)
            && self.field.as_deref().is_none_or(|f| m.field == Some(f))
    }

    /// A one-line description (`stream=sim/orders kind=unknown_enum`, or `everything`).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("stream", &self.stream),
            ("kind", &self.kind),
            ("field", &self.field),
        ]
        .iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| format!("{n}={v}")))
        .collect();
        if parts.is_empty() {
            "everything".into()
        } else {
            parts.join(" ")
        }
    }
}

/// What triage needs of a dead letter, borrowed from the consumed message.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// `intake.source` (kept from landing).
    pub source: Option<&'a str>,
    /// `intake.stream` (kept from landing; absent for events, whose stream is in the value).
    pub stream: Option<&'a str>,
    /// `dlq.error.kind` (`unknown` when absent).
    pub kind: &'a str,
    /// `dlq.error.field`.
    pub field: Option<&'a str>,
    /// `dlq.error.detail`.
    pub detail: Option<&'a str>,
    /// `dlq.origin`.
    pub origin: Option<&'a str>,
    /// `dlq.stage`: the stage that refused it.
    pub stage: Option<&'a str>,
    /// `intake.kind` of the landing record.
    pub landing_kind: Option<&'a str>,
    /// When it was dead-lettered: `dlq.at`, else the record's timestamp.
    pub at: Option<OffsetDateTime>,
}

impl<'a> Meta<'a> {
    /// Reads the headers of a DLQ message.
    pub fn of(m: &'a BorrowedMessage<'a>) -> Self {
        let h = m.headers();
        let dead = DeadLetter::read(h);
        let some = |s: &'a str| Some(s).filter(|s| !s.is_empty());
        let at = some(dead.at)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .or_else(|| {
                m.timestamp().to_millis().and_then(|ms| {
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
                })
            });
        Meta {
            partition: m.partition(),
            offset: m.offset(),
            source: headers::get_str(h, headers::SOURCE),
            stream: headers::get_str(h, headers::STREAM),
            kind: dead.kind,
            field: dead.field,
            detail: some(dead.detail),
            origin: some(dead.origin),
            stage: some(dead.stage),
            landing_kind: headers::get_str(h, headers::KIND),
            at,
        }
    }

    /// `source/stream` (a `?` for what is unknown).
    pub fn stream_key(&self) -> String {
        crate::contract::stream_key(self.source.unwrap_or("?"), self.stream.unwrap_or("?"))
    }

    /// The parsed `dlq.origin`.
    pub fn origin(&self) -> Option<Origin> {
        self.origin.and_then(Origin::parse)
    }
}

/// RFC 3339, for output.
pub(crate) fn rfc3339(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// Reads the whole DLQ (read_committed) to the end it has now, calling `f` for every record.
/// Blocking.
///
/// # Errors
/// Kafka errors, or a time-out.
pub fn scan(
    kafka: &Kafka,
    names: &TopicNames,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<u64> {
    scan_topic(kafka, &names.dlq(), f)
}

/// Reads every committed record of `topic` once, oldest first per partition. Blocking.
///
/// # Errors
/// Kafka failures.
pub fn scan_topic(
    kafka: &Kafka,
    topic: &str,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<u64> {
    let c = kafka.reader_consumer("scan")?;
    Ok(reader::read_topic(&c, topic, READ_TIMEOUT, f)?.1)
}

/// Which dead letters earlier replays re-landed, from their markers in `intake.jobs`.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// DLQ partition → sorted, disjoint inclusive offset ranges, each with its replay id.
    ranges: BTreeMap<i32, Vec<(i64, i64, Arc<str>)>>,
    /// Replay id → when it ran and how many dead letters it re-landed.
    replays: HashMap<String, (String, u64)>,
}

impl History {
    /// Reads every replay marker (read_committed). Blocking.
    ///
    /// # Errors
    /// Kafka errors, or a time-out.
    pub fn read(kafka: &Kafka, names: &TopicNames) -> anyhow::Result<Self> {
        let dlq = names.dlq();
        let mut h = History::default();
        scan_topic(kafka, &names.jobs(), |m| {
            if let Some(marker) = m.payload().and_then(replay::Marker::parse)
                && marker.dlq == dlq
            {
                h.add(&marker);
            }
        })?;
        h.normalise();
        Ok(h)
    }

    fn add(&mut self, m: &replay::Marker) {
        let id: Arc<str> = m.replay_id.as_str().into();
        for (p, ranges) in &m.positions {
            let v = self.ranges.entry(*p).or_default();
            v.extend(ranges.iter().map(|[a, b]| (*a, *b, id.clone())));
        }
        let e = self
            .replays
            .entry(m.replay_id.clone())
            .or_insert_with(|| (m.at.clone(), 0));
        e.1 += m
            .positions
            .values()
            .flatten()
            .map(|[a, b]| (b - a + 1) as u64)
            .sum::<u64>();
    }

    fn normalise(&mut self) {
        for v in self.ranges.values_mut() {
            v.sort_by_key(|r| r.0);
        }
    }

    /// The replay that re-landed the dead letter at `partition`/`offset`, if any.
    pub fn replayed_by(&self, partition: i32, offset: i64) -> Option<&str> {
        let v = self.ranges.get(&partition)?;
        let i = v.partition_point(|r| r.0 <= offset);
        // Ranges of different replays never overlap (a replay skips what is replayed), so the
        // last range starting at or before the offset is the only candidate.
        let r = v.get(i.checked_sub(1)?)?;
        (offset <= r.1).then_some(&*r.2)
    }

    /// When a replay id ran and how many dead letters it re-landed.
    pub fn replay(&self, id: &str) -> Option<(&str, u64)> {
        self.replays.get(id).map(|(at, n)| (at.as_str(), *n))
    }
}

/// `intake dlq ...`
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Counts by stream, kind and field, with first and last seen and one sample per group.
    Summary {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Which dead letters.
        #[command(flatten)]
        filter: Filter,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// The dead letters themselves: headers, detail, value.
    Show {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Which dead letters.
        #[command(flatten)]
        filter: Filter,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-land the chosen dead letters to the landing topic, for another validation, in one
    /// transaction. Idempotent: a replay id (by default derived from the filter and the dead
    /// letters chosen) runs once, and a dead letter replayed before is not replayed again.
    Replay {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Which dead letters.
        #[command(flatten)]
        filter: Filter,
        /// The replay id (default: derived from the filter and the dead letters chosen).
        #[arg(long)]
        replay_id: Option<String>,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// `intake schema ...`
#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// A candidate schema for a stream inferred from its dead letters (new optional fields,
    /// new enum symbols) or, with `--from-landing`, from its landed records (a first schema
    /// when it has none), checked with the registry; `--apply` registers it.
    Propose {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// The stream: `source/stream`, or the stream name alone.
        #[arg(long)]
        stream: String,
        /// Learn only from dead letters of this kind (default: every schema drift kind).
        #[arg(long, conflicts_with = "from_landing")]
        kind: Option<String>,
        /// Learn from the stream's landed records instead of its dead letters: a first schema
        /// when none is registered (primary key and version required, every other field
        /// optional), otherwise an evolution of the latest one. `--apply` also writes a first
        /// schema to `registry.schema_dir` when no file is there.
        #[arg(long)]
        from_landing: bool,
        /// Register the candidate when the registry accepts it as compatible.
        #[arg(long)]
        apply: bool,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// Prints a command's result: pretty JSON with `--json`, otherwise as `print` lays it out for
/// a person.
fn emit<T: Serialize>(v: &T, json: bool, print: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print(v);
    }
    Ok(())
}

/// Runs `intake dlq ...`.
///
/// # Errors
/// Configuration, Kafka, registry or blob store failures.
pub async fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::Summary {
            config,
            filter,
            json,
        } => {
            let s = summary::gather(&load(&config)?, &filter).await?;
            emit(&s, json, |s| summary::print(s, &filter))
        }
        DlqCommand::Show {
            config,
            filter,
            limit,
            json,
        } => {
            let shown = show::gather(&load(&config)?, &filter, limit).await?;
            emit(&shown, json, |shown| show::print(shown, &filter))
        }
        DlqCommand::Replay {
            config,
            filter,
            replay_id,
            json,
        } => {
            let cfg = load(&config)?;
            let report = replay::run(
                &cfg,
                replay::Options {
                    filter,
                    replay_id,
                    progress: !json,
                },
            )
            .await?;
            emit(&report, json, replay::print)
        }
    }
}

/// Runs `intake schema ...`.
///
/// # Errors
/// Configuration, Kafka or registry failures; a candidate the registry refuses with `--apply`.
pub async fn run_schema(cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Propose {
            config,
            stream,
            kind,
            from_landing,
            apply,
            json,
        } => {
            let cfg = load(&config)?;
            let report = if from_landing {
                propose::run_from_landing(&cfg, &stream, apply).await?
            } else {
                propose::run(&cfg, &stream, kind.as_deref(), apply).await?
            };
            emit(&report, json, propose::print)?;
            if apply && report.refused() {
                anyhow::bail!(
                    "not applied: the registry does not accept the candidate as compatible with {}",
                    report.subject
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>(
        source: &'a str,
        stream: &'a str,
        kind: &'a str,
        field: Option<&'a str>,
    ) -> Meta<'a> {
        Meta {
            partition: 0,
            offset: 0,
            source: Some(source),
            stream: Some(stream),
            kind,
            field,
            detail: None,
            origin: None,
            stage: None,
            landing_kind: None,
            at: None,
        }
    }

    #[test]
    fn filters_match_stream_kind_and_field() {
        let m = meta("sim", "orders", "unknown_enum", Some("status"));
        assert!(Filter::default().matches(&m));
        let f = |stream: Option<&str>, kind: Option<&str>, field: Option<&str>| Filter {
            stream: stream.map(Into::into),
            kind: kind.map(Into::into),
            field: field.map(Into::into),
        };
        assert!(f(Some("orders"), None, None).matches(&m));
        assert!(f(Some("sim/orders"), Some("unknown_enum"), Some("status")).matches(&m));
        assert!(!f(Some("other/orders"), None, None).matches(&m));
        assert!(!f(Some("customers"), None, None).matches(&m));
        assert!(!f(None, Some("unknown_field"), None).matches(&m));
        assert!(!f(None, None, Some("currency")).matches(&m));
        assert!(!f(None, None, Some("x")).matches(&meta("sim", "orders", "too_large", None)));
        assert_eq!(
            f(Some("orders"), Some("unknown_enum"), None).describe(),
            "stream=orders kind=unknown_enum"
        );
        assert_eq!(Filter::default().describe(), "everything");
    }

    #[test]
    fn history_finds_the_replay_of_an_offset() {
        let mut h = History::default();
        let marker = |id: &str, positions: BTreeMap<i32, Vec<[i64; 2]>>| replay::Marker {
            record_type: replay::Marker::TYPE.into(),
            replay_id: id.into(),
            part: 0,
            parts: 1,
            at: "2024-01-01T00:00:00Z".into(),
            dlq: "t.dlq".into(),
            filter: Filter::default(),
            positions,
        };
        h.add(&marker(
            "r-1",
            BTreeMap::from([(0, vec![[3, 5], [9, 9]]), (1, vec![[0, 0]])]),
        ));
        h.add(&marker("r-2", BTreeMap::from([(0, vec![[6, 8]])])));
        h.normalise();
        let by = |p, o| h.replayed_by(p, o);
        assert_eq!(
            (0..11).map(|o| by(0, o)).collect::<Vec<_>>(),
            [
                None,
                None,
                None,
                Some("r-1"),
                Some("r-1"),
                Some("r-1"),
                Some("r-2"),
                Some("r-2"),
                Some("r-2"),
                Some("r-1"),
                None
            ]
        );
        assert_eq!(by(1, 0), Some("r-1"));
        assert_eq!(by(1, 1), None);
        assert_eq!(by(2, 0), None);
        assert_eq!(h.replay("r-1").map(|r| r.1), Some(5));
        assert_eq!(h.replay("r-3"), None);
    }
}
