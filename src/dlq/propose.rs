//! `intake schema propose`: a candidate schema for a stream, learned from its dead letters.
//!
//! The samples are the stream's dead letters of the schema drift kinds (or of `--kind`) that no
//! replay re-landed yet: the record's bytes, or the `data` member of a webhook event. The
//! candidate comes from [`crate::validate::infer::propose`] over the latest registered version
//! (new members as optional fields, new enum symbols; what cannot be a compatible change is
//! listed as a blocker), and the registry is asked whether it would accept it
//! ([`Registry::is_compatible`], under the subject's compatibility level). `--apply` registers
//! it only then ([`crate::registry::apply_one`], which keeps the subject `BACKWARD`).

use std::collections::BTreeMap;

use rdkafka::message::Message;
use serde::Serialize;
use serde_json::Value as Json;

use super::{Filter, History, Meta, scan};
use crate::config::Config;
use crate::headers::Kind;
use crate::kafka::Kafka;
use crate::registry::{self, Registry, RegistryError};
use crate::topics::TopicNames;
use crate::validate::{DriftKind, infer};

/// Most dead letters learned from.
const MAX_SAMPLES: usize = 10_000;

/// The kinds a schema change can fix, learned from by default.
const SCHEMA_DRIFT: [DriftKind; 4] = [
    DriftKind::UnknownField,
    DriftKind::UnknownEnum,
    DriftKind::TypeMismatch,
    DriftKind::MissingField,
];

/// What `intake schema propose` found (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `source/stream`.
    pub stream: String,
    /// The registry subject.
    pub subject: String,
    /// The latest registered version the candidate evolves.
    pub current_version: u32,
    /// Its schema id.
    pub current_id: u32,
    /// Dead letters learned from, by kind.
    pub samples: BTreeMap<String, u64>,
    /// Dead letters of the stream that could not be samples (not a JSON object).
    pub unusable: u64,
    /// Changes the candidate makes, in order.
    pub changes: Vec<String>,
    /// Drift no compatible change can accept, and why.
    pub blockers: Vec<String>,
    /// Whether the registry would accept the candidate (None: no change to check).
    pub compatible: Option<bool>,
    /// The candidate schema (None: no change).
    pub candidate: Option<String>,
    /// Line diff from the current schema to the candidate (`- `, `+ `, `  `).
    pub diff: Vec<String>,
    /// What `--apply` did.
    pub applied: Option<String>,
}

impl Report {
    /// Whether the registry refused the candidate.
    pub fn refused(&self) -> bool {
        self.compatible == Some(false)
    }

    /// Dead letters learned from.
    pub fn sample_count(&self) -> u64 {
        self.samples.values().sum()
    }
}

/// Proposes (and with `apply`, registers) a schema for `stream` (`source/stream` or a unique
/// stream name) from its dead letters.
///
/// # Errors
/// An unknown stream, nothing registered for it, Kafka or registry failures.
pub async fn run(
    cfg: &Config,
    stream: &str,
    kind: Option<&str>,
    apply: bool,
) -> anyhow::Result<Report> {
    let (src, st) = cfg
        .stream(stream)
        .ok_or_else(|| anyhow::anyhow!("no stream `{stream}` in the configuration (or the name is not unique: use source/stream)"))?;
    if let Some(k) = kind {
        k.parse::<DriftKind>()
            .map_err(|e| anyhow::anyhow!("--kind: {e}"))?;
    }
    let names = TopicNames::from_config(cfg);
    let subject = names.subject(&src.name, &st.name);
    let reg = Registry::new(&cfg.registry)?;
    let latest = match reg.latest(&subject).await {
        Ok(l) => l,
        Err(RegistryError::NotFound(_)) => anyhow::bail!(
            "nothing is registered for `{subject}`: register a first schema (intake schema apply), then propose changes to it"
        ),
        Err(e) => return Err(e.into()),
    };
    let filter = Filter {
        stream: Some(format!("{}/{}", src.name, st.name)),
        kind: kind.map(str::to_owned),
        field: None,
    };
    let (samples, by_kind, unusable) = {
        let kafka = Kafka::new(&cfg.kafka)?;
        let names = names.clone();
        tokio::task::spawn_blocking(move || collect(&kafka, &names, &filter)).await??
    };
    let proposal = infer::propose(&latest.schema, &samples)
        .map_err(|e| anyhow::anyhow!("proposing a schema for `{subject}`: {e}"))?;
    let mut report = Report {
        stream: format!("{}/{}", src.name, st.name),
        subject: subject.clone(),
        current_version: latest.version,
        current_id: latest.id,
        samples: by_kind,
        unusable,
        changes: proposal.changes.clone(),
        blockers: proposal.blockers.clone(),
        compatible: None,
        candidate: None,
        diff: Vec::new(),
        applied: None,
    };
    if !proposal.changes_schema() {
        return Ok(report);
    }
    report.compatible = Some(reg.is_compatible(&subject, &proposal.schema_json).await?);
    let current = serde_json::to_value(&*latest.schema).unwrap_or(Json::Null);
    let candidate = serde_json::from_str::<Json>(&proposal.schema_json).unwrap_or(Json::Null);
    report.diff = line_diff(&pretty(&current), &pretty(&candidate));
    report.candidate = Some(proposal.schema_json.clone());
    if apply && report.compatible == Some(true) {
        let outcomes =
            registry::apply_stream(cfg, &reg, &src.name, &st.name, &proposal.schema_json).await?;
        report.applied = Some(
            outcomes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    Ok(report)
}

/// The samples of the dead letters that pass `filter` (schema drift kinds only, unless the
/// filter names a kind) and were not replayed. Blocking.
fn collect(
    kafka: &Kafka,
    names: &TopicNames,
    filter: &Filter,
) -> anyhow::Result<(Vec<Json>, BTreeMap<String, u64>, u64)> {
    let history = History::read(kafka, names)?;
    let mut samples = Vec::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut unusable = 0u64;
    scan(kafka, names, |m| {
        let meta = Meta::of(m);
        if !filter.matches(&meta)
            || history.replayed_by(meta.partition, meta.offset).is_some()
            || samples.len() >= MAX_SAMPLES
        {
            return;
        }
        if filter.kind.is_none() && !SCHEMA_DRIFT.iter().any(|k| k.as_str() == meta.kind) {
            return;
        }
        let value = serde_json::from_slice::<Json>(m.payload().unwrap_or_default()).ok();
        let is_event =
            meta.landing_kind.and_then(|k| Kind::parse(k.as_bytes())) == Some(Kind::Event);
        let record = if is_event {
            value.and_then(|mut v| v.get_mut("data").map(Json::take))
        } else {
            value
        };
        match record {
            Some(r) if r.is_object() => {
                *by_kind.entry(meta.kind.to_owned()).or_default() += 1;
                samples.push(r);
            }
            _ => unusable += 1,
        }
    })?;
    Ok((samples, by_kind, unusable))
}

fn pretty(v: &Json) -> Vec<String> {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A line diff (longest common subsequence): `  ` kept, `- ` removed, `+ ` added.
fn line_diff(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

/// The changed lines of a diff with `context` unchanged lines around each, `…` between hunks.
fn with_context(diff: &[String], context: usize) -> Vec<&str> {
    let changed: Vec<usize> = (0..diff.len())
        .filter(|&i| !diff[i].starts_with("  "))
        .collect();
    let keep = |i: usize| {
        changed
            .iter()
            .any(|&c| i + context >= c && i <= c + context)
    };
    let mut out = Vec::new();
    let mut skipped = false;
    for (i, l) in diff.iter().enumerate() {
        if keep(i) {
            if skipped && !out.is_empty() {
                out.push("…");
            }
            skipped = false;
            out.push(l.as_str());
        } else {
            skipped = true;
        }
    }
    out
}

/// Prints the proposal for a person.
pub fn print(r: &Report) {
    println!(
        "{} ({}): latest version {} (id {}); learned from {} dead letter(s) {:?}, {} unusable",
        r.subject,
        r.stream,
        r.current_version,
        r.current_id,
        r.sample_count(),
        r.samples,
        r.unusable
    );
    if r.changes.is_empty() {
        println!("no change proposed: the dead letters need none the schema can make compatibly");
    } else {
        println!("changes:");
        for c in &r.changes {
            println!("  {c}");
        }
    }
    if !r.blockers.is_empty() {
        println!("blockers (records with these stay in the DLQ; fix upstream or by hand):");
        for b in &r.blockers {
            println!("  {b}");
        }
    }
    if r.candidate.is_none() {
        return;
    }
    match r.compatible {
        Some(true) => println!("registry: accepts the candidate as compatible"),
        Some(false) => println!("registry: REFUSES the candidate as incompatible"),
        None => {}
    }
    println!("diff (current → candidate):");
    for l in with_context(&r.diff, 2) {
        println!("  {l}");
    }
    match &r.applied {
        Some(a) => println!("applied: {a}"),
        None if r.compatible == Some(true) => println!("run with --apply to register it"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_owned).collect()
    }

    #[test]
    fn line_diff_marks_added_and_removed_lines() {
        let a = lines("a\nb\nc\nd");
        let b = lines("a\nc\nx\nd\ne");
        assert_eq!(
            line_diff(&a, &b),
            ["  a", "- b", "  c", "+ x", "  d", "+ e"]
        );
        assert_eq!(
            line_diff(&a, &a)
                .iter()
                .filter(|l| !l.starts_with("  "))
                .count(),
            0
        );
        assert_eq!(line_diff(&[], &lines("x")), ["+ x"]);
        let long = line_diff(
            &lines("1\n2\n3\n4\n5\n6\n7\n8\n9"),
            &lines("1\n2\n3\n4\n5\n6\n7\n8\n9\nx"),
        );
        assert_eq!(with_context(&long, 2), ["  8", "  9", "+ x"]);
        let two = line_diff(
            &lines("a\nb\nc\nd\ne\nf\ng\nh"),
            &lines("A\nb\nc\nd\ne\nf\ng\nH"),
        );
        assert_eq!(
            with_context(&two, 1),
            ["- a", "+ A", "  b", "…", "  g", "- h", "+ H"]
        );
    }
}
