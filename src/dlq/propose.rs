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
use crate::headers::{self, Kind};
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
pub struct ProposalReport {
    /// `source/stream`.
    pub stream: String,
    /// The registry subject.
    pub subject: String,
    /// The latest registered version the candidate evolves (None: nothing registered yet,
    /// the candidate is a first schema).
    pub current_version: Option<u32>,
    /// Its schema id.
    pub current_id: Option<u32>,
    /// Samples learned from, by dead-letter kind (`landed` for landed records).
    pub samples: BTreeMap<String, u64>,
    /// Dead letters or landed pages of the stream that could not be samples (not a JSON
    /// object, not a page that splits, a blob that cannot be read).
    pub unusable: u64,
    /// Changes the candidate makes, in order.
    pub changes: Vec<String>,
    /// Drift no compatible change can accept, and why.
    pub blockers: Vec<String>,
    /// Where `--apply` wrote a first schema (None: not written).
    pub written: Option<String>,
    /// Whether the registry would accept the candidate (None: no change to check).
    pub compatible: Option<bool>,
    /// The candidate schema (None: no change).
    pub candidate: Option<String>,
    /// Line diff from the current schema to the candidate (`- `, `+ `, `  `).
    pub diff: Vec<String>,
    /// What `--apply` did.
    pub applied: Option<String>,
}

impl ProposalReport {
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
) -> anyhow::Result<ProposalReport> {
    let target = Target::resolve(cfg, stream).await?;
    let Some(latest) = &target.latest else {
        anyhow::bail!(
            "nothing is registered for `{}`: register a first schema (intake schema apply), or infer one from landed data (intake schema propose --from-landing)",
            target.subject
        );
    };
    if let Some(k) = kind {
        k.parse::<DriftKind>()
            .map_err(|e| anyhow::anyhow!("--kind: {e}"))?;
    }
    let filter = Filter {
        stream: Some(target.stream.clone()),
        kind: kind.map(str::to_owned),
        field: None,
    };
    let (samples, by_kind, unusable) = {
        let kafka = Kafka::new(&cfg.kafka)?;
        let names = TopicNames::from_config(cfg);
        tokio::task::spawn_blocking(move || collect(&kafka, &names, &filter)).await??
    };
    let proposal = infer::propose(&latest.schema, &samples)
        .map_err(|e| anyhow::anyhow!("proposing a schema for `{}`: {e}", target.subject))?;
    target.finish(cfg, proposal, by_kind, unusable, apply).await
}

/// Proposes (and with `apply`, registers) a schema for `stream` learned from its landed
/// records (pages split as validate splits them, webhook events' `data`, claim-checked pages
/// read from the blob store): a first schema when nothing is registered for it, otherwise an
/// evolution of the latest version. `apply` also writes a first schema to the stream's file
/// under `registry.schema_dir` when none is there, so `intake schema apply` keeps it.
///
/// # Errors
/// An unknown stream, no landed records, Kafka, blob store or registry failures.
pub async fn run_from_landing(
    cfg: &Config,
    stream: &str,
    apply: bool,
) -> anyhow::Result<ProposalReport> {
    let target = Target::resolve(cfg, stream).await?;
    let (src, st) = cfg.stream(stream).expect("resolved above");
    let (samples, unusable) = landed_samples(cfg, &src.name, st).await?;
    if samples.is_empty() {
        anyhow::bail!(
            "no landed record of `{}` to learn from ({unusable} unusable): fetch it first (intake fetch --once --stream {})",
            target.stream,
            target.stream
        );
    }
    let by_kind = BTreeMap::from([("landed".to_owned(), samples.len() as u64)]);
    let proposal = match &target.latest {
        Some(latest) => infer::propose(&latest.schema, &samples),
        None => infer::first_for(&src.name, st, &samples),
    }
    .map_err(|e| anyhow::anyhow!("proposing a schema for `{}`: {e}", target.subject))?;
    let first = target.latest.is_none();
    let mut report = target
        .finish(cfg, proposal, by_kind, unusable, apply)
        .await?;
    if first && report.applied.is_some() {
        let path = registry::schema_path(&cfg.registry.schema_dir, &src.name, &st.name);
        if !path.exists() {
            let text = report.candidate.clone().unwrap_or_default();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, format!("{text}\n"))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            report.written = Some(path.display().to_string());
        }
    }
    Ok(report)
}

/// The stream a proposal is for, and what is registered for it.
struct Target {
    stream: String,
    subject: String,
    source: String,
    name: String,
    latest: Option<std::sync::Arc<registry::Latest>>,
    reg: Registry,
}

impl Target {
    async fn resolve(cfg: &Config, stream: &str) -> anyhow::Result<Self> {
        let (src, st) = cfg
            .stream(stream)
            .ok_or_else(|| anyhow::anyhow!("no stream `{stream}` in the configuration (or the name is not unique: use source/stream)"))?;
        let subject = TopicNames::from_config(cfg).subject(&src.name, &st.name);
        let reg = Registry::new(&cfg.registry)?;
        let latest = match reg.latest(&subject).await {
            Ok(l) => Some(l),
            Err(RegistryError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            stream: format!("{}/{}", src.name, st.name),
            subject,
            source: src.name.clone(),
            name: st.name.clone(),
            latest,
            reg,
        })
    }

    /// The report for `proposal`: the registry's verdict, the diff, and with `apply` the
    /// registration under every subject of the stream.
    async fn finish(
        self,
        cfg: &Config,
        proposal: infer::Proposal,
        samples: BTreeMap<String, u64>,
        unusable: u64,
        apply: bool,
    ) -> anyhow::Result<ProposalReport> {
        let mut report = ProposalReport {
            stream: self.stream,
            subject: self.subject.clone(),
            current_version: self.latest.as_ref().map(|l| l.version),
            current_id: self.latest.as_ref().map(|l| l.id),
            samples,
            unusable,
            changes: proposal.changes.clone(),
            blockers: proposal.blockers.clone(),
            written: None,
            compatible: None,
            candidate: None,
            diff: Vec::new(),
            applied: None,
        };
        if !proposal.changes_schema() {
            return Ok(report);
        }
        report.compatible = Some(
            self.reg
                .is_compatible(&self.subject, &proposal.schema_json)
                .await?,
        );
        let current = self
            .latest
            .as_ref()
            .and_then(|l| serde_json::to_value(&*l.schema).ok());
        let candidate = serde_json::from_str::<Json>(&proposal.schema_json).unwrap_or(Json::Null);
        report.diff = line_diff(
            &current.map(|c| pretty(&c)).unwrap_or_default(),
            &pretty(&candidate),
        );
        report.candidate = Some(proposal.schema_json.clone());
        if apply && report.compatible == Some(true) {
            let outcomes = registry::apply_stream(
                cfg,
                &self.reg,
                &self.source,
                &self.name,
                &proposal.schema_json,
            )
            .await?;
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
}

/// Samples of `stream`'s landed records, at most [`MAX_SAMPLES`], and how many landed values
/// could not give any.
async fn landed_samples(
    cfg: &Config,
    source: &str,
    st: &crate::config::StreamConfig,
) -> anyhow::Result<(Vec<Json>, u64)> {
    use crate::validate::split::Splitter;
    let pages = Splitter::new(&st.records, st.primary_key.first(), None)
        .map_err(|e| anyhow::anyhow!("stream {source}/{}: {e}", st.name))?;
    let events = Splitter::new("/data", st.primary_key.first(), None)
        .map_err(|e| anyhow::anyhow!("stream {source}/{}: {e}", st.name))?;
    let kafka = Kafka::new(&cfg.kafka)?;
    let landing = TopicNames::from_config(cfg).landing();
    let (source, stream) = (source.to_owned(), st.name.clone());
    // Inline values are split while reading; claim-checked pages are read afterwards.
    let (mut samples, mut refs, mut unusable) = tokio::task::spawn_blocking(move || {
        let mut samples = Vec::new();
        let mut refs = Vec::new();
        let mut unusable = 0u64;
        super::scan_topic(&kafka, &landing, |m| {
            let h = m.headers();
            if samples.len() >= MAX_SAMPLES
                || headers::get_str(h, headers::SOURCE) != Some(source.as_str())
                || headers::get_str(h, headers::STREAM) != Some(stream.as_str())
            {
                return;
            }
            let payload = m.payload().unwrap_or_default();
            let format = crate::contract::LandingHeaders::read(h).format;
            match headers::get_str(h, headers::KIND).and_then(|k| Kind::parse(k.as_bytes())) {
                Some(Kind::Page | Kind::Batch) => {
                    unusable += u64::from(!take(&pages, payload, format, &mut samples));
                }
                Some(Kind::Event) => {
                    unusable += u64::from(!take(&events, payload, format, &mut samples));
                }
                Some(Kind::BlobRef) => {
                    let r = crate::contract::LandedBody::read_blob(h)
                        .or_else(|| serde_json::from_slice(payload).ok());
                    match r {
                        Some(r) => refs.push((r, format)),
                        None => unusable += 1,
                    }
                }
                _ => {}
            }
        })?;
        anyhow::Ok((samples, refs, unusable))
    })
    .await??;
    let blobs = crate::blob::BlobStore::open(&cfg.blob)?;
    let pages = Splitter::new(&st.records, st.primary_key.first(), None)
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", st.name))?;
    for (r, format) in refs.drain(..) {
        if samples.len() >= MAX_SAMPLES {
            break;
        }
        match blobs.get(&r).await {
            Ok(page) => unusable += u64::from(!take(&pages, &page, format, &mut samples)),
            Err(e) => {
                tracing::warn!(blob = %r.uri, error = %e, "a claim-checked page could not be read; not learned from");
                unusable += 1;
            }
        }
    }
    samples.truncate(MAX_SAMPLES);
    Ok((samples, unusable))
}

/// Adds the JSON-object records of `page` to `samples`; false when the page gave none. A page
/// of JSON Lines or CSV (`format`; `None`: one this version cannot read) is normalised first,
/// CSV cells typed by their look.
fn take(
    splitter: &crate::validate::split::Splitter,
    page: &[u8],
    format: Option<crate::config::Format>,
    samples: &mut Vec<Json>,
) -> bool {
    use crate::config::Format;
    use crate::validate::split::{ByLook, normalize};
    let Some(Ok(rows)) = format.map(|f| normalize(f, page, &ByLook)) else {
        return false;
    };
    let flat;
    let splitter = if format == Some(Format::Json) {
        splitter
    } else {
        flat = splitter.rows();
        &flat
    };
    let Ok(elements) = splitter.elements(&rows.page) else {
        return false;
    };
    let before = samples.len();
    for e in elements {
        if let Ok(v) = serde_json::from_str::<Json>(e.raw)
            && v.is_object()
        {
            samples.push(v);
        }
    }
    samples.len() > before
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
pub fn print(r: &ProposalReport) {
    let current = match (r.current_version, r.current_id) {
        (Some(v), Some(id)) => format!("latest version {v} (id {id})"),
        _ => "nothing registered yet".to_owned(),
    };
    println!(
        "{} ({}): {current}; learned from {} sample(s) {:?}, {} unusable",
        r.subject,
        r.stream,
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
    if let Some(path) = &r.written {
        println!("written: {path} (kept by intake schema apply)");
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
