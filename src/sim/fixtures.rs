//! `intake sim --fixtures DIR`: serves pages exported by `intake fixtures export` (format in
//! [`crate::fixtures`]) beside the generated data.
//!
//! A request whose path is the path of some fixture page's `request` is a fixture request,
//! whatever route it would otherwise reach (a fixture of `/v1/customers` hides the generated
//! customers). It passes the same auth → quota → faults guard as `/v1` (`super::api::admit`),
//! so quotas and injected faults still apply, then:
//!
//! - a page whose query holds the same `key=value` pairs (any order; secret-looking
//!   parameters ignored on both sides) answers with its body as exported, its status, the
//!   content type of its format (`json`: `application/json`, `jsonl`:
//!   `application/x-ndjson`, `csv`: `text/csv`) and, for a page of a `Link`-paginated
//!   stream, `Link: <http://<host><link_next>>; rel="next"`. When several pages share one
//!   request (a POST stream whose cursor is in the body), each request gets the first of them
//!   not served yet, and the last one once all were;
//! - no match: 404 `{"error": "no_fixture", "message": …}` naming the request and the closest
//!   fixture request (fewest differing pairs), counted as a miss of the directory.
//!
//! `GET /admin/fixtures/stats`: per directory, the pages with the requests each served, and
//! the misses. Fixture answers are not compressed (`--compress`) and do not count in
//! `/admin/stats` pages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::conn::ConnHandle;
use super::error::ApiError;
use super::state::SimState;
use crate::fixtures::{Manifest, content_type, query_distance, query_pairs, split_target};

/// The statistics endpoint.
pub const STATS_PATH: &str = "/admin/fixtures/stats";

/// Every loaded fixture directory, and its pages by request path.
pub struct Fixtures {
    dirs: Vec<Dir>,
    /// Request path → (directory, page) in load order.
    by_path: HashMap<String, Vec<(usize, usize)>>,
}

struct Dir {
    path: String,
    manifest: Manifest,
    pages: Vec<Page>,
    misses: AtomicU64,
}

struct Page {
    file: String,
    request: String,
    pairs: Vec<(String, String)>,
    status: StatusCode,
    body: Bytes,
    link_next: Option<String>,
    served: AtomicU64,
}

impl Fixtures {
    /// Reads every directory's manifest and pages, checking each page's size and sha256.
    ///
    /// # Errors
    /// A directory without a readable manifest, a missing or altered page, a bad status: the
    /// reason, naming the file.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, String> {
        let mut out = Self {
            dirs: Vec::new(),
            by_path: HashMap::new(),
        };
        for dir in dirs {
            let d = load_dir(dir)?;
            let di = out.dirs.len();
            for (pi, p) in d.pages.iter().enumerate() {
                let (path, _) = split_target(&p.request);
                out.by_path
                    .entry(path.to_owned())
                    .or_default()
                    .push((di, pi));
            }
            tracing::info!(
                dir = %d.path,
                stream = %format!("{}/{}", d.manifest.source, d.manifest.stream),
                sync_id = %d.manifest.sync_id,
                pages = d.pages.len(),
                "serving fixtures"
            );
            out.dirs.push(d);
        }
        Ok(out)
    }

    /// Whether any directory was loaded.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Whether `path` is the path of a fixture request.
    pub fn serves(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// The answer to a fixture request (`path` must be one [`Fixtures::serves`]); `host` forms
    /// `Link` URLs.
    pub fn answer(&self, path: &str, query: &str, host: &str) -> Response {
        let Some(candidates) = self.by_path.get(path) else {
            return ApiError::not_found("no fixture has this path").into_response();
        };
        let pairs = query_pairs(query);
        let matching: Vec<&(usize, usize)> = candidates
            .iter()
            .filter(|(d, p)| self.dirs[*d].pages[*p].pairs == pairs)
            .collect();
        let Some(&&last) = matching.last() else {
            return self.miss(path, query, &pairs, candidates);
        };
        let (d, p) = matching
            .iter()
            .map(|x| **x)
            .find(|(d, p)| {
                self.dirs[*d].pages[*p]
                    .served
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .unwrap_or_else(|| {
                self.dirs[last.0].pages[last.1]
                    .served
                    .fetch_add(1, Ordering::SeqCst);
                last
            });
        let dir = &self.dirs[d];
        let page = &dir.pages[p];
        let mut response = (
            page.status,
            [(header::CONTENT_TYPE, content_type(&dir.manifest.format))],
            page.body.clone(),
        )
            .into_response();
        if let Some(next) = &page.link_next
            && let Ok(v) = HeaderValue::from_str(&format!("<http://{host}{next}>; rel=\"next\""))
        {
            response.headers_mut().insert(header::LINK, v);
        }
        response
    }

    fn miss(
        &self,
        path: &str,
        query: &str,
        pairs: &[(String, String)],
        candidates: &[(usize, usize)],
    ) -> Response {
        let (d, p) = *candidates
            .iter()
            .min_by_key(|(d, p)| query_distance(pairs, &self.dirs[*d].pages[*p].pairs))
            .expect("a fixture path has pages");
        let dir = &self.dirs[candidates[0].0];
        dir.misses.fetch_add(1, Ordering::SeqCst);
        let closest = &self.dirs[d];
        // The client's own secrets are not echoed back either.
        let query = crate::fixtures::strip_secrets(query);
        let request = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "no_fixture",
            message: format!(
                "no fixture answers {request}; the closest fixture request is {} ({}/{})",
                closest.pages[p].request, closest.path, closest.pages[p].file
            ),
        }
        .into_response()
    }

    /// `GET /admin/fixtures/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let dirs: Vec<serde_json::Value> = self
            .dirs
            .iter()
            .map(|d| {
                let pages: Vec<serde_json::Value> = d
                    .pages
                    .iter()
                    .map(|p| {
                        json!({
                            "file": p.file,
                            "request": p.request,
                            "served": p.served.load(Ordering::SeqCst),
                        })
                    })
                    .collect();
                json!({
                    "dir": d.path,
                    "source": d.manifest.source,
                    "stream": d.manifest.stream,
                    "sync_id": d.manifest.sync_id,
                    "served": d.pages.iter().map(|p| p.served.load(Ordering::SeqCst)).sum::<u64>(),
                    "misses": d.misses.load(Ordering::SeqCst),
                    "pages": pages,
                })
            })
            .collect();
        json!({ "dirs": dirs })
    }
}

fn load_dir(dir: &Path) -> Result<Dir, String> {
    let manifest = Manifest::read(dir).map_err(|e| format!("{e:#}"))?;
    let mut pages = Vec::with_capacity(manifest.pages.len());
    for e in &manifest.pages {
        let path = dir.join(&e.file);
        let body = std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        if body.len() as u64 != e.bytes || crate::fixtures::sha256_hex(&body) != e.sha256 {
            return Err(format!(
                "{} does not match its manifest entry ({} bytes, sha256 {})",
                path.display(),
                e.bytes,
                e.sha256
            ));
        }
        let status = StatusCode::from_u16(e.status)
            .map_err(|_| format!("{}: status {} is not an HTTP status", e.file, e.status))?;
        if !e.request.starts_with('/') {
            return Err(format!("{}: request `{}` is not a path", e.file, e.request));
        }
        let (_, query) = split_target(&e.request);
        pages.push(Page {
            file: e.file.clone(),
            request: e.request.clone(),
            pairs: query_pairs(query),
            status,
            body: Bytes::from(body),
            link_next: e.link_next.clone(),
            served: AtomicU64::new(0),
        });
    }
    Ok(Dir {
        path: dir.display().to_string(),
        manifest,
        pages,
        misses: AtomicU64::new(0),
    })
}

/// The state of [`intercept`].
#[derive(Clone)]
pub struct Intercept {
    /// The simulator (auth, quota, faults).
    pub sim: Arc<SimState>,
    /// The fixtures.
    pub fixtures: Arc<Fixtures>,
}

/// In front of every route: fixture requests are guarded and answered here, the statistics
/// too; everything else goes on to the routes.
pub async fn intercept(
    State(s): State<Intercept>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == STATS_PATH {
        return axum::Json(s.fixtures.stats()).into_response();
    }
    if !s.fixtures.serves(path) {
        return next.run(request).await;
    }
    let decision = match super::api::admit(&s.sim, &conn, request.headers()).await {
        Ok(d) => d,
        Err(response) => return response,
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| s.sim.local_addr.to_string(), str::to_owned);
    let answer = s.fixtures.answer(
        request.uri().path(),
        request.uri().query().unwrap_or(""),
        &host,
    );
    super::api::with_rate_headers(answer, &decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_dir(pages: &[(&str, &[u8])], link: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<crate::fixtures::PageEntry> = pages
            .iter()
            .enumerate()
            .map(|(i, (request, body))| {
                let file = format!("page-{:04}.body", i + 1);
                std::fs::write(dir.path().join(&file), body).unwrap();
                crate::fixtures::PageEntry {
                    file,
                    request: (*request).to_owned(),
                    status: 200,
                    sha256: crate::fixtures::sha256_hex(body),
                    bytes: body.len() as u64,
                    records: None,
                    link_next: link.map(str::to_owned),
                }
            })
            .collect();
        let m = Manifest {
            source: "sim".into(),
            stream: "customers".into(),
            sync_id: "s1".into(),
            format: "jsonl".into(),
            exported_at: "2026-01-01T00:00:00Z".into(),
            pages: entries,
        };
        std::fs::write(
            dir.path().join(crate::fixtures::MANIFEST),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        dir
    }

    async fn body(r: Response) -> (StatusCode, Option<String>, Vec<u8>) {
        let status = r.status();
        let link = r
            .headers()
            .get(header::LINK)
            .map(|v| v.to_str().unwrap().to_owned());
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, link, b.to_vec())
    }

    #[tokio::test]
    async fn pages_are_served_by_path_and_query_pairs_and_counted() {
        let dir = write_dir(
            &[
                ("/v1/c?limit=2", b"one"),
                ("/v1/c?limit=2&cursor=x", b"two"),
            ],
            Some("/v1/c?next=1"),
        );
        let f = Fixtures::load(&[dir.path().to_owned()]).unwrap();
        assert!(f.serves("/v1/c") && !f.serves("/v1/d"));
        let (s, link, b) = body(f.answer("/v1/c", "cursor=x&api_key=k&limit=2", "h:1")).await;
        assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"two"[..]));
        assert_eq!(
            link.as_deref(),
            Some("<http://h:1/v1/c?next=1>; rel=\"next\"")
        );
        let (s, _, b) = body(f.answer("/v1/c", "limit=3", "h:1")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let text = String::from_utf8(b).unwrap();
        assert!(
            text.contains("no_fixture") && text.contains("/v1/c?limit=2"),
            "{text}"
        );
        let stats = f.stats();
        assert_eq!(stats["dirs"][0]["misses"], 1);
        assert_eq!(stats["dirs"][0]["pages"][0]["served"], 0);
        assert_eq!(stats["dirs"][0]["pages"][1]["served"], 1);
    }

    #[tokio::test]
    async fn pages_sharing_a_request_are_served_in_order() {
        let dir = write_dir(&[("/q", b"1"), ("/q", b"2")], None);
        let f = Fixtures::load(&[dir.path().to_owned()]).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(body(f.answer("/q", "", "h")).await.2);
        }
        assert_eq!(got, [b"1".to_vec(), b"2".to_vec(), b"2".to_vec()]);
    }

    #[test]
    fn an_altered_page_is_refused() {
        let dir = write_dir(&[("/q", b"1")], None);
        std::fs::write(dir.path().join("page-0001.body"), b"2").unwrap();
        let e = Fixtures::load(&[dir.path().to_owned()]).err().unwrap();
        assert!(e.contains("does not match"), "{e}");
    }
}
