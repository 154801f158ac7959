//! `intake dlq show`: the dead letters that pass a filter, with every header and the value.

use rdkafka::message::{Headers as _, Message};
use serde::Serialize;

use super::{Filter, History, Meta, rfc3339, scan};
use crate::config::Config;
use crate::kafka::Kafka;
use crate::topics::TopicNames;

/// Characters of a value printed for a person (`--json` has it whole).
const VALUE_CHARS: usize = 2000;

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// `source/stream`.
    pub stream: String,
    /// `dlq.error.kind`.
    pub kind: String,
    /// `dlq.error.field`.
    pub field: Option<String>,
    /// `dlq.error.detail`.
    pub detail: Option<String>,
    /// `dlq.origin`.
    pub origin: Option<String>,
    /// `dlq.at`.
    pub at: String,
    /// The replay that re-landed it, if one did.
    pub replayed_by: Option<String>,
    /// The key (lossy UTF-8).
    pub key: Option<String>,
    /// Every header in order (values lossy UTF-8).
    pub headers: Vec<(String, Option<String>)>,
    /// The value as UTF-8, when it is.
    pub value: Option<String>,
    /// The value in hex, when it is not UTF-8.
    pub value_hex: Option<String>,
    /// Value size in bytes.
    pub bytes: usize,
}

/// The first `limit` dead letters (0: all) that pass `filter`, in DLQ order per partition.
///
/// # Errors
/// Kafka errors.
pub async fn gather(cfg: &Config, filter: &Filter, limit: usize) -> anyhow::Result<Vec<Shown>> {
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(cfg);
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Shown>> {
        let history = History::read(&kafka, &names)?;
        let mut out = Vec::new();
        scan(&kafka, &names, |m| {
            if limit != 0 && out.len() >= limit {
                return;
            }
            let meta = Meta::of(m);
            if !filter.matches(&meta) {
                return;
            }
            let value = m.payload().unwrap_or_default();
            let text = std::str::from_utf8(value).ok();
            out.push(Shown {
                partition: meta.partition,
                offset: meta.offset,
                stream: meta.stream_key(),
                kind: meta.kind.to_owned(),
                field: meta.field.map(str::to_owned),
                detail: meta.detail.map(str::to_owned),
                origin: meta.origin.map(str::to_owned),
                at: rfc3339(meta.at),
                replayed_by: history
                    .replayed_by(meta.partition, meta.offset)
                    .map(str::to_owned),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_owned(),
                                    x.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                value: text.map(str::to_owned),
                value_hex: text.is_none().then(|| hex::encode(value)),
                bytes: value.len(),
            });
        })?;
        Ok(out)
    })
    .await?
}

/// Prints dead letters for a person.
pub fn print(shown: &[Shown], filter: &Filter) {
    println!("{} dead letter(s) ({})", shown.len(), filter.describe());
    for d in shown {
        println!();
        println!(
            "dlq {}/{}  {}  {}  {}{}",
            d.partition,
            d.offset,
            d.at,
            d.stream,
            d.kind,
            d.field
                .as_deref()
                .map(|f| format!("  field {f}"))
                .unwrap_or_default()
        );
        println!("  detail:   {}", d.detail.as_deref().unwrap_or("-"));
        println!(
            "  origin:   {}    key: {}",
            d.origin.as_deref().unwrap_or("-"),
            d.key.as_deref().unwrap_or("-")
        );
        if let Some(r) = &d.replayed_by {
            println!("  replayed: by {r}");
        }
        let shown_headers: Vec<String> = d
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq."))
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
            .collect();
        println!("  landing headers: {}", shown_headers.join("  "));
        match (&d.value, &d.value_hex) {
            (Some(v), _) => println!(
                "  value ({} bytes): {}",
                d.bytes,
                super::summary::preview(v.as_bytes(), VALUE_CHARS)
            ),
            (None, Some(h)) => println!(
                "  value ({} bytes, not UTF-8, hex): {}",
                d.bytes,
                super::summary::preview(h.as_bytes(), VALUE_CHARS)
            ),
            (None, None) => println!("  value: none"),
        }
    }
}
