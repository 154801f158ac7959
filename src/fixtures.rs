//! `intake fixtures export`: what intake has landed from a real API, turned into simulator
//! fixtures for regression tests (`intake sim --fixtures DIR` serves them back).
//!
//! # The format
//!
//! A fixture directory holds one sync of one stream:
//!
//! - `page-0001.body`, `page-0002.body`, …: each landed page of the sync, in landing order,
//!   the raw bytes exactly as the API answered them (a claim-checked page, `intake.kind` =
//!   `blob-ref`, is read back from the blob store and checked against its sha256); never
//!   re-serialised, so a fixture is byte for byte what the parser saw.
//! - `manifest.json`:
//!
//! ```json
//! {
//!   "source": "sim", "stream": "customers", "sync_id": "…", "format": "json",
//!   "exported_at": "2026-01-01T00:00:00Z",
//!   "pages": [
//!     { "file": "page-0001.body", "request": "/v1/customers?limit=50", "status": 200,
//!       "sha256": "…", "bytes": 12345, "records": 50 }
//!   ]
//! }
//! ```
//!
//! `request` is the path and query of the page's `intake.request` (no scheme, no host), with
//! every query parameter whose name looks like a secret ([`SECRET_PARAMS`]: `api_key`,
//! `access_token`, `token`, `key`, `signature`, …, whatever the case) dropped: `intake.request`
//! is redacted already, and a fixture keeps not even the parameter's name. `records` is the
//! number of records the stream's splitter finds in the page (absent when the page does not
//! split). `link_next` (only for streams paginated by `Link` headers) is the path and query of
//! the page's next URL, from `intake.next_cursor`: intake does not land response headers, so
//! this is how the simulator can answer the page with its `Link: <…>; rel="next"` again.
//!
//! # Which sync
//!
//! `--sync ID`, or by default the last complete sync: the last sync id of the stream with a
//! `sync-end` marker in landing (among those that landed pages: an incremental sync that
//! found nothing new has none); when no sync of the stream ended, the last sync id seen (with
//! a warning: the fixture may stop short of the end).
//!
//! # Replaying
//!
//! `intake sim --fixtures DIR` answers a request whose path equals a page's `request` path and
//! whose query holds the same `key=value` pairs (in any order; secret-looking parameters on
//! either side ignored) with that page's body, status and a content type by format; see
//! `sim::fixtures`. A fetch configured like the original stream, with `base_url` the
//! simulator, asks for the same requests page by page, since each page carries its own
//! pagination token (a cursor in the body; `Link` pages through `link_next`).
//!
//! Limitations: pages whose next URL is absolute in the body (`next_url` pagination) point at
//! the original host, which fetch refuses to follow on another origin; requests are matched
//! on path and query only (not method, headers or body), so a POST stream whose cursor travels
//! in the body (HubSpot's search) has every page under one request: the simulator then serves
//! the pages of that request in manifest order.

/// The SHA-256 of a fixture page, as the manifest records it (hex).
pub use crate::blob::sha256_hex;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rdkafka::message::Message as _;
use serde::{Deserialize, Serialize};

use crate::blob::{BlobRef, BlobStore};
use crate::config::{Config, Format, Pagination};
use crate::contract::{LandedBody, LandingHeaders, SyncMarker};
use crate::headers::{self, Kind};
use crate::kafka::Kafka;
use crate::topics::TopicNames;

/// Query parameter names that never reach a fixture (compared without regard to case): the
/// one list fetch also redacts `intake.request` with.
pub use crate::fetch::http::SECRET_PARAMS;

/// The manifest's file name in a fixture directory.
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json` of a fixture directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `intake.source` of the pages.
    pub source: String,
    /// `intake.stream` of the pages.
    pub stream: String,
    /// The sync the pages are of.
    pub sync_id: String,
    /// `json`, `jsonl` or `csv` (`intake.format`).
    pub format: String,
    /// When the export ran (RFC 3339).
    pub exported_at: String,
    /// The pages, in landing order.
    pub pages: Vec<PageEntry>,
}

/// One page of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageEntry {
    /// The body's file, next to the manifest (`page-0001.body`).
    pub file: String,
    /// Path and query of the request that fetched it, secret-looking parameters dropped.
    pub request: String,
    /// `intake.status`.
    pub status: u16,
    /// sha256 of the body (hex).
    pub sha256: String,
    /// Size of the body.
    pub bytes: u64,
    /// Records the stream's splitter finds in the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// `Link` pagination: path and query of the next page's URL (served back as a `Link`
    /// header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_next: Option<String>,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    ///
    /// # Errors
    /// A missing or unreadable manifest, named.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a fixture manifest", path.display()))
    }
}

/// The content type a fixture page is served with, by its manifest's format.
pub fn content_type(format: &str) -> &'static str {
    match format {
        "jsonl" => "application/x-ndjson",
        "csv" => "text/csv",
        _ => "application/json",
    }
}

/// Whether a query parameter's name looks like a secret ([`SECRET_PARAMS`]).
pub fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// A raw query without its secret-looking parameters, the others kept as written.
pub fn strip_secrets(query: &str) -> String {
    query
        .split('&')
        .filter(|seg| !seg.is_empty())
        .filter(|seg| {
            let name = url::form_urlencoded::parse(seg.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            !is_secret_param(&name)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The path and query of a request URL (absolute, or already a path), without scheme, host,
/// fragment and secret-looking query parameters.
pub fn request_target(url: &str) -> String {
    let (path, query) = match url::Url::parse(url) {
        Ok(u) => (u.path().to_owned(), u.query().map(str::to_owned)),
        Err(_) => {
            let no_fragment = url.split('#').next().unwrap_or_default();
            match no_fragment.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (no_fragment.to_owned(), None),
            }
        }
    };
    let query = query.map(|q| strip_secrets(&q)).unwrap_or_default();
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// A request target's path and query (`/a?b=1` → `("/a", "b=1")`).
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// A query's decoded `key=value` pairs without the secret-looking ones, sorted: two queries
/// match when these are equal (a multiset of pairs, whatever their order).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !is_secret_param(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// Whether two queries hold the same pairs ([`query_pairs`]).
pub fn same_query(a: &str, b: &str) -> bool {
    query_pairs(a) == query_pairs(b)
}

/// How many pairs two sorted pair lists do not share (their multiset difference, both ways):
/// 0 for matching queries, small for a near miss.
pub fn query_distance(a: &[(String, String)], b: &[(String, String)]) -> usize {
    let (mut i, mut j, mut differ) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                differ += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                differ += 1;
                j += 1;
            }
        }
    }
    differ + (a.len() - i) + (b.len() - j)
}

/// What `intake fixtures export` is asked; also its flags (their doc comments are its help).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExportOptions {
    /// The stream: `source/stream`, or its name alone when unique.
    #[arg(long)]
    pub stream: String,
    /// The sync to export (`intake.sync_id`); default: the last sync with a `sync-end`
    /// marker.
    #[arg(long = "sync", value_name = "SYNC_ID")]
    pub sync: Option<String>,
    /// The directory; default `fixtures/<source>/<stream>`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the fixtures of a directory that is not empty.
    #[arg(long)]
    pub force: bool,
    /// Print a line per page written (not a flag: the command always does).
    #[arg(skip)]
    pub progress: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The directory.
    pub dir: PathBuf,
    /// The manifest written.
    pub manifest: Manifest,
    /// Bytes of page bodies written.
    pub bytes: u64,
}

/// A landed page of the stream, as read from landing.
struct LandedPage {
    partition: i32,
    offset: i64,
    sync_id: String,
    request: String,
    status: u16,
    format: Option<Format>,
    next_cursor: Option<String>,
    body: Body,
}

enum Body {
    Inline(bytes::Bytes),
    Stored(BlobRef),
    /// A `blob-ref` whose reference cannot be read.
    BadRef,
}

/// The pages of the chosen sync, and every sync id seen (in landing order).
struct Collected {
    pages: Vec<LandedPage>,
    syncs: Vec<String>,
    complete: Option<String>,
}

/// Exports one sync of a stream's landed pages as fixtures (see the module docs); prints a
/// line per page with `progress`.
///
/// # Errors
/// An unknown stream, a non-empty directory without `force`, no landed page of the stream
/// (or of the asked sync), an unreadable or altered blob, Kafka or file system failures.
pub async fn export(cfg: &Config, opts: &ExportOptions) -> anyhow::Result<ExportReport> {
    let (src, st) = cfg.stream(&opts.stream).ok_or_else(|| {
        anyhow::anyhow!(
            "no stream `{}` in the configuration (or the name is not unique: use source/stream)",
            opts.stream
        )
    })?;
    let key = crate::contract::stream_key(&src.name, &st.name);
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| Path::new("fixtures").join(&src.name).join(&st.name));
    let old = existing_entries(&dir)?;
    if !old.is_empty() && !opts.force {
        bail!(
            "{} is not empty ({} entries): pass --force to replace its fixtures",
            dir.display(),
            old.len()
        );
    }

    let landing = TopicNames::from_config(cfg).landing();
    let kafka = Kafka::new(&cfg.kafka)?;
    let collected = {
        let (source, stream, wanted, landing) = (
            src.name.clone(),
            st.name.clone(),
            opts.sync.clone(),
            landing.clone(),
        );
        tokio::task::spawn_blocking(move || collect(&kafka, &landing, &source, &stream, wanted))
            .await??
    };
    let sync_id = match (&opts.sync, &collected.complete) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => match collected.syncs.last() {
            Some(s) => {
                tracing::warn!(stream = %key, sync_id = %s, "no sync of the stream has ended (no sync-end marker): exporting the last sync seen, which may stop short of its end");
                eprintln!(
                    "warning: no sync of {key} has a sync-end marker; exporting the last sync seen ({s}), which may be incomplete"
                );
                s.clone()
            }
            None => bail!(
                "no landed page of `{key}` in {landing}: fetch it first (intake fetch --once --stream {key})"
            ),
        },
    };
    let mut pages: Vec<LandedPage> = collected
        .pages
        .into_iter()
        .filter(|p| p.sync_id == sync_id)
        .collect();
    if pages.is_empty() {
        bail!(
            "no landed page of `{key}` in sync {sync_id} (syncs of the stream in {landing}: {})",
            if collected.syncs.is_empty() {
                "none".to_owned()
            } else {
                collected.syncs.join(", ")
            }
        );
    }
    pages.sort_by_key(|p| (p.partition, p.offset));

    let format = pages.iter().find_map(|p| p.format).unwrap_or(st.format);
    let link = matches!(st.pagination, Pagination::Link { .. });
    let splitter = crate::validate::split::Splitter::for_stream(st).ok();
    let blobs = BlobStore::open(&cfg.blob)?;

    // Every body is read (and checked) before anything in the directory is replaced.
    let mut bodies = Vec::with_capacity(pages.len());
    for (i, p) in pages.iter().enumerate() {
        let body = match &p.body {
            Body::Inline(b) => b.clone(),
            Body::BadRef => bail!(
                "page {} of sync {sync_id} (landing {}/{}) is a blob-ref without a readable reference",
                i + 1,
                p.partition,
                p.offset
            ),
            Body::Stored(r) => {
                let b = blobs.get(r).await.with_context(|| {
                    format!(
                        "reading page {} of sync {sync_id} from the blob store ({}, landing {}/{})",
                        i + 1,
                        r.uri,
                        p.partition,
                        p.offset
                    )
                })?;
                let sha = crate::blob::sha256_hex(&b);
                if !r.sha256.is_empty() && sha != r.sha256 {
                    bail!(
                        "page {} of sync {sync_id}: the blob {} has sha256 {sha}, not the {} its reference names",
                        i + 1,
                        r.uri,
                        r.sha256
                    );
                }
                b
            }
        };
        bodies.push(body);
    }

    for name in &old {
        if is_fixture_file(name) {
            let path = dir.join(name);
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the old fixture {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut entries = Vec::with_capacity(pages.len());
    let mut total = 0u64;
    for (i, (p, body)) in pages.iter().zip(&bodies).enumerate() {
        let file = page_file(i + 1);
        let path = dir.join(&file);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        let entry = PageEntry {
            file,
            request: request_target(&p.request),
            status: p.status,
            sha256: crate::blob::sha256_hex(body),
            bytes: body.len() as u64,
            records: splitter
                .as_ref()
                .and_then(|s| count_records(s, p.format.unwrap_or(format), body)),
            link_next: if link {
                p.next_cursor
                    .as_deref()
                    .and_then(|c| c.strip_prefix("url:"))
                    .map(request_target)
            } else {
                None
            },
        };
        total += entry.bytes;
        if opts.progress {
            println!(
                "  {}  {:>9} bytes  {:>3}  {}",
                entry.file, entry.bytes, entry.status, entry.request
            );
        }
        entries.push(entry);
    }
    let manifest = Manifest {
        source: src.name.clone(),
        stream: st.name.clone(),
        sync_id,
        format: format.as_str().to_owned(),
        exported_at: headers::now_rfc3339(),
        pages: entries,
    };
    let path = dir.join(MANIFEST);
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(ExportReport {
        dir,
        manifest,
        bytes: total,
    })
}

/// Prints the summary of an export.
pub fn print(report: &ExportReport) {
    let m = &report.manifest;
    println!(
        "fixtures: {} page(s) of {}/{} (sync {}, {}), {} bytes, in {}",
        m.pages.len(),
        m.source,
        m.stream,
        m.sync_id,
        m.format,
        report.bytes,
        report.dir.display()
    );
    println!(
        "serve them with: intake sim --fixtures {}",
        report.dir.display()
    );
}

/// `page-0001.body`.
fn page_file(n: usize) -> String {
    format!("page-{n:04}.body")
}

/// A file an export writes (and `--force` replaces).
fn is_fixture_file(name: &str) -> bool {
    name == MANIFEST || (name.starts_with("page-") && name.ends_with(".body"))
}

/// The names in `dir` (none when it does not exist).
fn existing_entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut names = Vec::new();
            for e in rd {
                let e = e.with_context(|| format!("reading {}", dir.display()))?;
                names.push(e.file_name().to_string_lossy().into_owned());
            }
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The records of a page as validate would split them (bad lines and rows counted too); None
/// when the page does not split.
fn count_records(
    splitter: &crate::validate::split::Splitter,
    format: Format,
    body: &[u8],
) -> Option<u64> {
    use crate::validate::split::{ByLook, normalize};
    let rows = normalize(format, body, &ByLook).ok()?;
    let flat;
    let splitter = if format == Format::Json {
        splitter
    } else {
        flat = splitter.rows();
        &flat
    };
    let n = splitter.elements(&rows.page).ok()?.len() + rows.bad.len();
    Some(n as u64)
}

/// Reads landing to its end, keeping the stream's pages of `wanted` (or, without it, of the
/// last complete sync and the syncs after it). Blocking.
fn collect(
    kafka: &Kafka,
    landing: &str,
    source: &str,
    stream: &str,
    wanted: Option<String>,
) -> anyhow::Result<Collected> {
    let mut out = Collected {
        pages: Vec::new(),
        syncs: Vec::new(),
        complete: None,
    };
    crate::dlq::scan_topic(kafka, landing, |m| {
        let h = m.headers();
        if headers::get_str(h, headers::SOURCE) != Some(source)
            || headers::get_str(h, headers::STREAM) != Some(stream)
        {
            return;
        }
        let l = LandingHeaders::read(h);
        match l.kind {
            Some(Kind::SyncEnd) => {
                if let Some(Ok(marker)) = SyncMarker::read(h) {
                    let id = marker.sync_id;
                    // A sync that landed no page (an incremental one that found nothing new,
                    // or only unchanged pages) is not one to export.
                    if wanted.is_none() && out.pages.iter().any(|p| p.sync_id == id) {
                        // Older syncs are not exported: drop their pages as we go.
                        out.pages.retain(|p| p.sync_id == id);
                        out.complete = Some(id.to_owned());
                    }
                }
            }
            Some(kind @ (Kind::Page | Kind::BlobRef)) => {
                let Some(sync_id) = l.sync_id.map(|s| String::from_utf8_lossy(s).into_owned())
                else {
                    return;
                };
                if !out.syncs.contains(&sync_id) {
                    out.syncs.push(sync_id.clone());
                }
                if wanted.as_ref().is_some_and(|w| *w != sync_id) {
                    return;
                }
                let payload = m.payload().unwrap_or_default();
                let body = if kind == Kind::BlobRef {
                    match LandedBody::read_blob(h).or_else(|| serde_json::from_slice(payload).ok())
                    {
                        Some(r) => Body::Stored(r),
                        None => Body::BadRef,
                    }
                } else {
                    Body::Inline(bytes::Bytes::copy_from_slice(payload))
                };
                out.pages.push(LandedPage {
                    partition: m.partition(),
                    offset: m.offset(),
                    sync_id,
                    request: headers::get_str(h, headers::REQUEST)
                        .unwrap_or_default()
                        .to_owned(),
                    status: headers::get_str(h, headers::STATUS)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(200),
                    format: l.format,
                    next_cursor: headers::get_str(h, headers::NEXT_CURSOR).map(str::to_owned),
                    body,
                });
            }
            _ => {}
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_match_as_multisets_whatever_the_order() {
        assert!(same_query("limit=50&cursor=abc", "cursor=abc&limit=50"));
        assert!(same_query("", ""));
        assert!(same_query("a=1&a=2", "a=2&a=1"));
        assert!(!same_query("a=1&a=1", "a=1"), "a multiset, not a set");
        assert!(!same_query("limit=50", "limit=50&cursor=abc"));
        assert!(!same_query("limit=50", "limit=51"));
        // Decoded before comparing: the same value however it is escaped.
        assert!(same_query("q=a%20b&x=%5B1%5D", "x=[1]&q=a+b"));
        // Secrets on either side are ignored.
        assert!(same_query("limit=5&api_key=live", "limit=5"));
        assert!(same_query("Token=x&limit=5", "limit=5&access_token=y"));
    }

    #[test]
    fn near_misses_are_counted() {
        let a = query_pairs("limit=50&cursor=abc");
        assert_eq!(query_distance(&a, &a), 0);
        assert_eq!(query_distance(&a, &query_pairs("limit=50&cursor=abd")), 2);
        assert_eq!(query_distance(&a, &query_pairs("limit=50")), 1);
        assert_eq!(query_distance(&query_pairs(""), &a), 2);
    }

    #[test]
    fn secrets_are_stripped_names_and_all() {
        for name in ["api_key", "access_token", "token", "key", "signature"] {
            assert!(is_secret_param(name), "{name}");
            assert!(is_secret_param(&name.to_ascii_uppercase()), "{name}");
        }
        assert!(!is_secret_param("cursor"));
        assert!(!is_secret_param("keys"));
        assert_eq!(
            strip_secrets("limit=5&api_key=%5Bredacted%5D&cursor=a%2Bb&Signature=s&&key"),
            "limit=5&cursor=a%2Bb"
        );
        assert_eq!(strip_secrets("token=1"), "");
        assert_eq!(
            request_target(
                "https://api.example.com:8443/v1/customers?limit=50&access_token=%5Bredacted%5D&cursor=c1#frag"
            ),
            "/v1/customers?limit=50&cursor=c1"
        );
        assert_eq!(
            request_target("http://127.0.0.1:1/v1/x?token=t"),
            "/v1/x",
            "no query left, no `?`"
        );
        assert_eq!(request_target("/v1/x?b=2&key=k&a=1"), "/v1/x?b=2&a=1");
        assert_eq!(split_target("/v1/x?b=2&a=1"), ("/v1/x", "b=2&a=1"));
        assert_eq!(split_target("/v1/x"), ("/v1/x", ""));
    }

    #[test]
    fn a_manifest_round_trips_without_its_optional_fields() {
        let m = Manifest {
            source: "sim".into(),
            stream: "customers".into(),
            sync_id: "s1".into(),
            format: "json".into(),
            exported_at: "2026-01-01T00:00:00Z".into(),
            pages: vec![PageEntry {
                file: page_file(1),
                request: "/v1/customers?limit=50".into(),
                status: 200,
                sha256: "ab".into(),
                bytes: 2,
                records: None,
                link_next: None,
            }],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            !text.contains("records") && !text.contains("link_next"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        assert_eq!(m.pages[0].file, "page-0001.body");
        assert!(is_fixture_file("page-0001.body") && is_fixture_file(MANIFEST));
        assert!(!is_fixture_file("README.md"));
    }

    #[test]
    fn records_are_counted_as_validate_splits_them() {
        let s = crate::validate::split::Splitter::new("/data", "/id", None).unwrap();
        assert_eq!(
            count_records(&s, Format::Json, br#"{"data":[{"id":"a"},{"id":"b"}]}"#),
            Some(2)
        );
        assert_eq!(count_records(&s, Format::Json, b"{\"data\":"), None);
        assert_eq!(
            count_records(&s, Format::Jsonl, b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n"),
            Some(2)
        );
        assert_eq!(
            count_records(&s, Format::Csv, b"id,name\na,x\nb,y\n"),
            Some(2)
        );
        assert_eq!(content_type("jsonl"), "application/x-ndjson");
        assert_eq!(content_type("csv"), "text/csv");
        assert_eq!(content_type("json"), "application/json");
    }
}
