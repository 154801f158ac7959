//! `intake verify`: compares the curated topics and the DLQ with a ground truth (the
//! simulator's `/admin/truth`), exactly. Used by the demo's report and by end-to-end tests.
//!
//! For every stream: each live, non-drifted key must be in the curated topic (last record per
//! key, read_committed) with the truth's version (`intake.version` header); each deleted key
//! that was ever curated must end in a tombstone; no drifted key may be curated; and no key
//! the truth does not know. Drifted ids must be in the DLQ with their kind. A drifted id that
//! `intake dlq replay` re-landed (after a schema that accepts it was registered) may be
//! curated: it is counted as replayed, not as an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::Message;
use serde::Serialize;
use serde_json::Value;

use crate::blob::{BlobRef, BlobStore};
use crate::config::Config;

use crate::headers;
use crate::kafka::{Kafka, reader};
use crate::topics::TopicNames;

/// The comparison of one stream.
#[derive(Debug, Default, Serialize, Clone)]
pub struct StreamCheck {
    /// Live, non-drifted keys in the truth.
    pub expected_live: usize,
    /// Of those, curated with the right version.
    pub matched: usize,
    /// Expected but absent from the curated topic.
    pub missing: Vec<String>,
    /// Curated with an older version than the truth.
    pub stale: Vec<String>,
    /// Curated with a version the truth does not have, or a key the truth does not know.
    pub wrong: Vec<String>,
    /// Deleted in the truth and tombstoned.
    pub tombstoned: usize,
    /// Deleted in the truth but still live in the curated topic.
    pub not_tombstoned: Vec<String>,
    /// Drifted ids that reached the curated topic without being replayed from the DLQ.
    pub drifted_curated: Vec<String>,
    /// Drifted ids curated after `intake dlq replay` re-landed their dead letter.
    pub replayed_curated: usize,
    /// Drifted ids in the truth.
    pub drifted: usize,
    /// Drifted ids found in the DLQ with the right kind.
    pub drifted_in_dlq: usize,
    /// Live keys whose curated record is a claim-check reference whose body was read back
    /// from the blob store with the right sha256.
    pub claim_checked: usize,
    /// Live keys whose claim-check reference cannot be resolved (blob missing or corrupt).
    pub unresolved: Vec<String>,
}

impl StreamCheck {
    /// Whether the stream equals the truth.
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.stale.is_empty()
            && self.wrong.is_empty()
            && self.not_tombstoned.is_empty()
            && self.drifted_curated.is_empty()
            && self.unresolved.is_empty()
    }

    /// The checks that found ids, each named as the report prints it, with the first 10 of
    /// those ids joined by `, `: missing, stale, wrong, not tombstoned, drifted but curated and
    /// claim-checked with an unreadable body, in that order, the empty ones left out.
    pub fn failing_ids(&self) -> Vec<(&'static str, String)> {
        [
            ("missing", &self.missing),
            ("stale", &self.stale),
            ("wrong", &self.wrong),
            ("not tombstoned", &self.not_tombstoned),
            ("drifted but curated", &self.drifted_curated),
            ("claim-checked, body unreadable", &self.unresolved),
        ]
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(what, ids)| {
            (
                what,
                ids.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
            )
        })
        .collect()
    }
}

/// The whole comparison.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Per `source/stream`.
    pub streams: BTreeMap<String, StreamCheck>,
    /// DLQ records by kind.
    pub dlq_by_kind: BTreeMap<String, u64>,
}

impl VerifyReport {
    /// Whether every stream equals the truth.
    pub fn ok(&self) -> bool {
        self.streams.values().all(StreamCheck::ok)
    }
}

/// Last version per key of a curated topic (`None`: a tombstone).
type Curated = HashMap<String, Option<i64>>;

/// The keys of a stream with `key_format = "avro"`, decoded with their writer schemas from the
/// registry (by the id in each key), as text.
struct AvroKeys<'a> {
    registry: &'a crate::registry::Registry,
    rt: &'a tokio::runtime::Handle,
    schemas: HashMap<u32, std::sync::Arc<apache_avro::Schema>>,
}

impl AvroKeys<'_> {
    /// A key's fields by name as text, or why it does not decode.
    fn fields(&mut self, key: &[u8]) -> Result<Vec<(String, String)>, String> {
        let (id, datum) = crate::registry::wire::unframe(key).map_err(|e| e.to_string())?;
        let schema = match self.schemas.get(&id) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .rt
                    .block_on(self.registry.schema_by_id(id))
                    .map_err(|e| format!("key schema id {id}: {e}"))?;
                self.schemas.insert(id, s.clone());
                s
            }
        };
        let v = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .and_then(|r| r.read_value(&mut &datum[..]))
            .map_err(|e| format!("the key does not decode with schema id {id}: {e}"))?;
        crate::validate::key::decoded_texts(&v)
            .ok_or_else(|| format!("the key is not a record of key fields: {v:?}"))
    }
}

/// The id a simulator's truth knows a record by, from its key fields: a one-field key's value,
/// else the field `id`, else every value joined by `/`.
fn truth_id(fields: &[(String, String)]) -> String {
    match fields {
        [(_, one)] => one.clone(),
        _ => fields
            .iter()
            .find(|(n, _)| n == "id")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                fields
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("/")
            }),
    }
}

/// Last record per key of a curated topic: `key -> Some(version)` or `None` for a tombstone;
/// and the claim-check reference of each key whose last record is one.
#[allow(clippy::type_complexity)]
fn curated(
    kafka: &Kafka,
    topic: &str,
    pb: Option<&indicatif::ProgressBar>,
    mut avro: Option<AvroKeys<'_>>,
) -> anyhow::Result<(
    Curated,
    HashMap<String, BlobRef>,
    HashMap<String, Vec<(String, String)>>,
)> {
    let c = kafka.reader_consumer("verify")?;
    let mut out = HashMap::new();
    let mut refs = HashMap::new();
    let mut fields_of = HashMap::new();
    reader::read_topic(&c, topic, Duration::from_secs(300), |m| {
        let decoded;
        let k = match (&mut avro, m.key()) {
            (None, Some(k)) => match std::str::from_utf8(k) {
                Ok(k) => k,
                Err(_) => return,
            },
            (Some(avro), Some(k)) => {
                decoded = match avro.fields(k) {
                    Ok(fields) => {
                        let id = truth_id(&fields);
                        fields_of.insert(id.clone(), fields);
                        id
                    }
                    // Not a key the truth can know: reported as wrong.
                    Err(e) => format!(
                        "undecodable key at {}/{}/{}: {e}",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    ),
                };
                decoded.as_str()
            }
            (_, None) => return,
        };
        let v = match m.payload() {
            None => None,
            Some(_) => headers::get_str(m.headers(), headers::VERSION)
                .and_then(|v| v.parse().ok())
                .or(Some(i64::MIN)),
        };
        out.insert(k.to_owned(), v);
        match crate::contract::LandedBody::read_blob(m.headers()) {
            Some(r) if m.payload().is_some() => {
                refs.insert(k.to_owned(), r);
            }
            _ => {
                refs.remove(k);
            }
        }
        if let Some(pb) = pb {
            pb.inc(1);
        }
    })?;
    Ok((out, refs, fields_of))
}

/// A drifted id's dead letter: its kind, and whether a replay re-landed it.
struct DeadLetter {
    kind: String,
    replayed: bool,
}

/// DLQ ids per stream with their kind (ids from the raw record's `id`, else the landing key).
fn dlq(
    kafka: &Kafka,
    names: &TopicNames,
    by_kind: &mut BTreeMap<String, u64>,
    pb: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<HashMap<String, HashMap<String, DeadLetter>>> {
    let topic = &names.dlq();
    let history = crate::dlq::History::read(kafka, names)?;
    let c = kafka.reader_consumer("verify-dlq")?;
    let mut out: HashMap<String, HashMap<String, DeadLetter>> = HashMap::new();
    reader::read_topic(&c, topic, Duration::from_secs(300), |m| {
        let h = m.headers();
        let kind = crate::contract::DeadLetter::read(h).kind.to_owned();
        *by_kind.entry(kind.clone()).or_insert(0) += 1;
        if let Some(pb) = pb {
            pb.inc(1);
        }
        let stream = headers::get_str(h, headers::STREAM)
            .unwrap_or("?")
            .to_owned();
        let id = m
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .and_then(|v| {
                v.get("id")
                    .or_else(|| v.pointer("/data/id"))
                    .and_then(|x| x.as_str().map(str::to_owned))
            });
        if let Some(id) = id {
            let replayed = history.replayed_by(m.partition(), m.offset()).is_some();
            let e = out
                .entry(stream)
                .or_default()
                .entry(id)
                .or_insert(DeadLetter {
                    kind: kind.clone(),
                    replayed,
                });
            // A record that fails again after a replay is a new dead letter of the same id.
            e.kind = kind;
            e.replayed |= replayed;
        }
    })?;
    Ok(out)
}

/// Compares the configured source's streams with a simulator truth document.
///
/// # Errors
/// Kafka errors.
pub async fn compare(cfg: &Config, source: &str, truth: &Value) -> anyhow::Result<VerifyReport> {
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(cfg);
    let src = cfg
        .source(source)
        .ok_or_else(|| anyhow::anyhow!("no source `{source}` in the config"))?
        .clone();
    let truth = truth.clone();
    let blobs = BlobStore::open(&cfg.blob)?;
    let registry = crate::registry::Registry::new(&cfg.registry)?;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // A spinner on a terminal: reading large topics takes a while.
        let pb = crate::telemetry::spinner("verify: reading the DLQ");
        let mut report = VerifyReport::default();
        let dlq_ids = dlq(&kafka, &names, &mut report.dlq_by_kind, pb.as_ref())?;
        for st in &src.streams {
            let t = &truth["streams"][&st.name];
            if t.is_null() {
                continue;
            }
            if let Some(pb) = &pb {
                pb.set_message(format!("verify: reading {}/{}", src.name, st.name));
            }
            let avro = (st.key_format == crate::config::KeyFormat::Avro).then(|| AvroKeys {
                registry: &registry,
                rt: &rt,
                schemas: HashMap::new(),
            });
            let (cur, refs, key_fields) = curated(
                &kafka,
                &names.curated(&src.name, &st.name),
                pb.as_ref(),
                avro,
            )?;
            let drifted: BTreeMap<String, String> = t["drifted"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let live: BTreeMap<String, i64> = t["live"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v["version"].as_i64().unwrap_or(-1)))
                        .collect()
                })
                .unwrap_or_default();
            let deleted: BTreeSet<String> = t["deleted"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let mut chk = StreamCheck {
                drifted: drifted.len(),
                ..StreamCheck::default()
            };
            for (id, v) in &live {
                if drifted.contains_key(id) {
                    continue;
                }
                chk.expected_live += 1;
                // An Avro key's fields must be the record's values at the key's pointers.
                let key_differs = key_fields.get(id).and_then(|fields| {
                    let record = &t["live"][id]["record"];
                    st.primary_key.pointers().iter().zip(fields).find_map(|(p, (name, got))| {
                        let want = match record.pointer(p) {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => "(absent)".into(),
                        };
                        (want != *got).then(|| format!("{id} (key field {name} is {got}, the truth's {want})"))
                    })
                });
                if let Some(why) = key_differs {
                    chk.wrong.push(why);
                    continue;
                }
                match cur.get(id) {
                    Some(Some(cv)) if cv == v => chk.matched += 1,
                    Some(Some(cv)) if cv < v => chk.stale.push(id.clone()),
                    Some(Some(_)) => chk.wrong.push(id.clone()),
                    Some(None) | None => chk.missing.push(id.clone()),
                }
            }
            // A claim-checked record counts only if its body can be fetched and is intact.
            for (id, r) in &refs {
                if !live.contains_key(id) || drifted.contains_key(id) {
                    continue;
                }
                match rt.block_on(blobs.get(r)) {
                    Ok(_) => chk.claim_checked += 1,
                    Err(e) => {
                        tracing::warn!(key = %id, uri = %r.uri, error = %e, "a claim-checked record cannot be resolved");
                        chk.unresolved.push(id.clone());
                    }
                }
            }
            for id in &deleted {
                if drifted.contains_key(id) {
                    continue;
                }
                match cur.get(id) {
                    Some(None) => chk.tombstoned += 1,
                    Some(Some(_)) => chk.not_tombstoned.push(id.clone()),
                    None => {} // never curated: nothing to tombstone
                }
            }
            let in_dlq = dlq_ids.get(&st.name);
            for (id, v) in &cur {
                if drifted.contains_key(id) && v.is_some() {
                    if in_dlq.and_then(|m| m.get(id)).is_some_and(|d| d.replayed) {
                        chk.replayed_curated += 1;
                    } else {
                        chk.drifted_curated.push(id.clone());
                    }
                } else if !live.contains_key(id) && !deleted.contains(id) {
                    chk.wrong.push(id.clone());
                }
            }
            chk.drifted_in_dlq = drifted
                .iter()
                .filter(|(id, kind)| {
                    in_dlq
                        .and_then(|m| m.get(*id))
                        .is_some_and(|d| d.kind == **kind)
                })
                .count();
            report
                .streams
                .insert(format!("{}/{}", src.name, st.name), chk);
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        Ok(report)
    })
    .await?
}

/// Prints a report for a person.
pub fn print(r: &VerifyReport) {
    println!(
        "{:<22} {:>9} {:>9} {:>8} {:>6} {:>6} {:>11} {:>8} {:>12}",
        "stream",
        "expected",
        "matched",
        "missing",
        "stale",
        "wrong",
        "tombstoned",
        "drifted",
        "drift in DLQ"
    );
    for (k, c) in &r.streams {
        println!(
            "{:<22} {:>9} {:>9} {:>8} {:>6} {:>6} {:>11} {:>8} {:>12}",
            k,
            c.expected_live,
            c.matched,
            c.missing.len(),
            c.stale.len(),
            c.wrong.len() + c.drifted_curated.len() + c.not_tombstoned.len(),
            c.tombstoned,
            c.drifted,
            c.drifted_in_dlq
        );
        for (what, ids) in c.failing_ids() {
            println!("    {what}: {ids}");
        }
        if c.claim_checked > 0 {
            println!(
                "    carried by claim-check (body fetched, sha256 checked): {}",
                c.claim_checked
            );
        }
        if c.replayed_curated > 0 {
            println!(
                "    drifted, replayed from the DLQ and curated: {}",
                c.replayed_curated
            );
        }
    }
    println!(
        "dead letters by kind: {}",
        r.dlq_by_kind
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "curated topics {} the simulator's truth",
        if r.ok() { "EQUAL" } else { "DO NOT EQUAL" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_ids_names_the_non_empty_checks_with_their_first_ten_ids() {
        let check = StreamCheck {
            missing: (1..=12).map(|n| format!("m{n}")).collect(),
            drifted_curated: vec!["d1".into()],
            unresolved: vec!["u1".into(), "u2".into()],
            ..StreamCheck::default()
        };
        assert_eq!(
            check.failing_ids(),
            vec![
                (
                    "missing",
                    "m1, m2, m3, m4, m5, m6, m7, m8, m9, m10".to_owned()
                ),
                ("drifted but curated", "d1".to_owned()),
                ("claim-checked, body unreadable", "u1, u2".to_owned()),
            ]
        );
        assert!(StreamCheck::default().failing_ids().is_empty());
    }
}
