//! One stream's worker: syncs page by page, landing pages and the cursor in one transaction.
//!
//! The worker owns the stream's transactional id (`<group_prefix>-fetch-<source>-<stream>`):
//! `init` fences any previous owner and aborts its open transaction, and only then is the
//! cursor read back (read_committed), so it reflects exactly what was committed. State moves
//! forward only after a commit succeeds; an aborted transaction leaves it where it was, and
//! the same pages are fetched again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::FetchError;
use super::children::Tree;
use super::cursor::{CursorState, Mode, SyncPlan, next_stamp, parse_time, stream_key};
use super::http::{HttpError, Response, SourceClient};
use super::paginate::{self, PageCursor, PageFacts};
use super::request::{self, Shape, Values};
use super::unchanged::Unchanged;
use crate::blob::BlobStore;
use crate::config::{Config, SourceConfig, StreamConfig};
use crate::headers::{self, Kind};
use crate::kafka::txn::{self, Backoff};
use crate::kafka::{ErrorClass, Kafka, TxnProducer, classify};
use crate::quota::Pacer;
use crate::stage::Stage;
use crate::telemetry::metric;
use crate::topics::TopicNames;

mod land;
mod restore;

pub(in crate::fetch) use land::{Landed, Out, Place};
pub use restore::restore_cursors;
pub(in crate::fetch) use restore::{Prefixed, restore_cursors_with};

/// Everything a stream worker needs.
#[derive(Clone)]
pub struct StreamWorker {
    /// Whole config.
    pub cfg: Arc<Config>,
    /// The stream's source.
    pub source: Arc<SourceConfig>,
    /// The stream.
    pub stream: Arc<StreamConfig>,
    /// Kafka clients.
    pub kafka: Kafka,
    /// Topic names.
    pub names: TopicNames,
    /// The source's HTTP client.
    pub http: Arc<SourceClient>,
    /// The token's pacer.
    pub pacer: Arc<Pacer>,
    /// Claim-check store.
    pub blobs: BlobStore,
    /// Run syncs until one started by this worker completes, then return.
    pub once: bool,
    /// Start with a full sync even if an incremental one is due.
    pub force_full: bool,
    /// Progress reporting (a bar on a terminal).
    pub progress: Option<indicatif::ProgressBar>,
}

/// What a worker did before it returned.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamReport {
    /// Syncs completed.
    pub syncs: u64,
    /// Pages landed.
    pub pages: u64,
    /// Records landed.
    pub records: u64,
    /// Pages landed as blob references.
    pub blobs: u64,
}

/// Records a worker remembers to skip unchanged look-back pages (about 32 bytes each).
const UNCHANGED_CAP: usize = 1 << 20;
/// Pauses of a stream whose oversize page the blob store refused: 1 s doubling up to 30 s
/// (each retry fetches the page again).
const BLOB_PAUSE_FIRST: Duration = Duration::from_secs(1);
const BLOB_PAUSE_MAX: Duration = Duration::from_secs(30);

impl StreamWorker {
    pub(super) fn key(&self) -> String {
        stream_key(&self.source.name, &self.stream.name)
    }

    /// The transactional id: one per stream, so whoever owns the stream fences the previous owner.
    pub fn transactional_id(&self) -> String {
        txn::transactional_id(
            &self.cfg.kafka.group_prefix,
            txn::Writer::Fetch {
                source: &self.source.name,
                stream: &self.stream.name,
            },
        )
    }

    /// Runs until stopped (or, with `once`, until a sync started here completes).
    ///
    /// # Errors
    /// Fencing (another owner took the stream) and unrecoverable Kafka errors.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<StreamReport, FetchError> {
        let producer = self.kafka.txn_producer(&self.transactional_id())?;
        crate::kafka::retry::retrying("init transactions", || {
            let p = producer.clone();
            async move { p.blocking(|p| p.init()).await }
        })
        .await
        .map_err(|e| fetch_error("init transactions", e))?;
        // Restoring retries what a restarting broker or a moving leader throws at it.
        let mut wait = Duration::from_millis(200);
        let (mut state, mut tree) = loop {
            match self.restore().await {
                Ok(s) => break s,
                Err(FetchError::Kafka(e))
                    if classify(&e) == ErrorClass::Retry && wait < Duration::from_secs(30) =>
                {
                    tracing::warn!(source = %self.source.name, stream = %self.stream.name, error = %e, "restoring the cursor failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        };
        let mut report = StreamReport::default();
        let mut blob_backoff = Backoff::new(BLOB_PAUSE_FIRST, BLOB_PAUSE_MAX);
        let mut started_here = false;
        let mut unchanged = Unchanged::new(UNCHANGED_CAP);
        loop {
            if *stop.borrow() {
                return Ok(report);
            }
            let need_new = state.as_ref().is_none_or(|s| s.complete);
            if need_new {
                if self.once && started_here {
                    return Ok(report);
                }
                if !self.once {
                    // Between syncs: wait what is left of the poll interval (stoppable).
                    let wait = state
                        .as_ref()
                        .and_then(|s| s.last_sync_at.as_deref())
                        .and_then(parse_time)
                        .map_or(Duration::ZERO, |t| {
                            let since = time::OffsetDateTime::now_utc() - t;
                            self.stream
                                .poll_interval
                                .saturating_sub(since.try_into().unwrap_or(Duration::ZERO))
                        });
                    if !wait.is_zero() && sleep_or_stop(wait, &mut stop).await {
                        return Ok(report);
                    }
                }
                let next = self.begin_sync(state.as_ref());
                self.commit(&producer, &mut [], Some(&next), Some(Kind::SyncBegin))
                    .await?;
                if let Some(since) = next.since.as_deref().and_then(parse_time) {
                    unchanged.forget_before(since.unix_timestamp());
                }
                if let Some(t) = tree.as_mut() {
                    // A full sync read from its start here knows every parent there is.
                    t.seen_roots = (next.mode == Mode::Full).then(Default::default);
                }
                tracing::info!(source = %self.source.name, stream = %self.stream.name, sync_id = %next.sync_id, mode = next.mode.as_str(), since = ?next.since, "sync started");
                state = Some(next);
                started_here = true;
            }
            let cur = state.clone().expect("a sync is in progress");
            let batch = if cur.backfill.is_some() {
                // A windowed backfill: its windows land with their own cursors; the stream's
                // completes the sync once they are all read.
                match self.backfill(&cur, &stop).await {
                    Ok(done) => {
                        report.pages += done.pages;
                        report.records += done.records;
                        match done.complete {
                            Some(next) => Ok((Vec::new(), next)),
                            None => return Ok(report),
                        }
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.fetch_batch(&cur, &producer, &unchanged, &mut tree)
                    .await
            };
            match batch {
                Ok((mut pages, next)) => {
                    blob_backoff = Backoff::new(BLOB_PAUSE_FIRST, BLOB_PAUSE_MAX);
                    let marker = next.complete.then_some(Kind::SyncEnd);
                    self.commit(&producer, &mut pages, Some(&next), marker)
                        .await?;
                    if let Some(t) = tree.as_mut().filter(|_| next.complete) {
                        match self.vanish_unseen_roots(t, &producer).await {
                            Ok(()) => {}
                            Err(BatchError::Fatal(e)) => return Err(e),
                            // Later: the cursors of the vanished parents stay, and the next
                            // full sync finds them gone again.
                            Err(BatchError::Http(_) | BatchError::Blob(_)) => {}
                        }
                    }
                    for p in &pages {
                        unchanged.remember(&p.prints);
                    }
                    report.pages += pages.len() as u64;
                    let n: u64 = pages.iter().map(|p| p.records).sum();
                    report.records += n;
                    if let Some(pb) = &self.progress {
                        pb.set_message(format!(
                            "{}/{}: sync {} page {} ({} records)",
                            self.source.name,
                            self.stream.name,
                            &next.sync_id[..8],
                            next.pages,
                            next.records
                        ));
                        match next.time_progress() {
                            Some((read, span)) => {
                                time_bar(pb, span);
                                pb.set_position(read);
                            }
                            None if pb.length().is_none() => pb.inc(n),
                            None => {}
                        }
                    }
                    if next.complete {
                        report.syncs += 1;
                        metrics::gauge!(metric::FETCH_LAST_SYNC, "source" => self.source.name.clone(), "stream" => self.stream.name.clone())
                            .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
                        tracing::info!(source = %self.source.name, stream = %self.stream.name, sync_id = %next.sync_id, pages = next.pages, records = next.records, "sync complete");
                    }
                    state = Some(next);
                }
                Err(BatchError::Http(e)) => {
                    tracing::error!(source = %self.source.name, stream = %self.stream.name, error = %e, pause_s = self.stream.poll_interval.as_secs(), "stream paused: the upstream refused the request; committed pages stay committed");
                    metrics::counter!(metric::ERRORS, "stage" => Stage::Fetch.name(), "class" => "http")
                        .increment(1);
                    if self.once {
                        return Err(FetchError::Http(e));
                    }
                    if sleep_or_stop(self.stream.poll_interval, &mut stop).await {
                        return Ok(report);
                    }
                }
                Err(BatchError::Blob(e)) => {
                    let pause = blob_backoff.next_pause();
                    tracing::error!(source = %self.source.name, stream = %self.stream.name, error = %e, retry_in_s = pause.as_secs(), "stream paused: the blob store refused an oversize page (a full disk?); nothing of the batch was landed, and it is fetched again");
                    metrics::counter!(metric::ERRORS, "stage" => Stage::Fetch.name(), "class" => "blob")
                        .increment(1);
                    if self.once {
                        return Err(FetchError::Blob(e));
                    }
                    if sleep_or_stop(pause, &mut stop).await {
                        return Ok(report);
                    }
                }
                Err(BatchError::Fatal(e)) => return Err(e),
            }
        }
    }

    fn begin_sync(&self, prev: Option<&CursorState>) -> CursorState {
        let plan = SyncPlan {
            full_sync_every: self.stream.full_sync_every,
            lookback: self.stream.incremental.as_ref().map(|i| i.lookback),
            force_full: self.force_full,
        };
        let mut next = CursorState::begin(
            &self.source.name,
            &self.stream.name,
            prev,
            plan,
            time::OffsetDateTime::now_utc(),
            uuid::Uuid::new_v4().to_string(),
        );
        // The first sync of a stream with a backfill reads its history in windows.
        if let Some(b) = &self.stream.backfill
            && next.committed_high_water.is_none()
            && let (Some(start), Some(until)) = (b.start_time(), next.started_at.clone())
        {
            next.backfill = Some(super::cursor::BackfillPlan {
                start: super::cursor::format_time(start),
                until,
                step_s: b.step.as_secs().max(1),
                done: 0,
                windows: 0,
                running: 0,
            });
        }
        next
    }

    /// Fetches up to `pages_per_transaction` pages from `cur`, returning them and the state
    /// after them (not yet committed).
    ///
    /// A page whose records `unchanged` holds as landed is not landed again, except in a full
    /// sync that detects deletes (see [`super::unchanged`]); the cursor still moves past it.
    async fn fetch_batch(
        &self,
        cur: &CursorState,
        producer: &TxnProducer,
        unchanged: &Unchanged,
        tree: &mut Option<Tree>,
    ) -> Result<(Vec<Landed>, CursorState), BatchError> {
        let mut next = cur.clone();
        let mut pages = Vec::new();
        // Bytes of the pages in hand (see [`TXN_PAGE_BYTES`]).
        let mut held = 0usize;
        let inc = self.stream.incremental.as_ref();
        let format = inc.map(|i| &i.format);
        let fmt = |t: Option<time::OffsetDateTime>| t.zip(format).map(|(t, f)| f.format(t));
        // In a full sync `{since}` is the Unix epoch; the query parameter is sent only in an
        // incremental sync, as before.
        let since_t = cur.since.as_deref().and_then(parse_time);
        let since = fmt(since_t);
        let until = fmt(cur.started_at.as_deref().and_then(parse_time));
        let mut filters: Vec<(&str, &str)> = Vec::new();
        if let (Some(inc), Some(s)) = (inc, since.as_deref())
            && cur.mode == Mode::Incremental
        {
            filters.push((inc.param.as_str(), s));
            if let (Some(end), Some(u)) = (&inc.end_param, until.as_deref()) {
                filters.push((end.as_str(), u));
            }
        }
        let since_value = since
            .clone()
            .or_else(|| fmt(Some(time::OffsetDateTime::UNIX_EPOCH)));
        while pages.len() < self.stream.pages_per_transaction as usize
            && next.page != PageCursor::Done
        {
            // A transaction carries pages while the next one can be asked for at once (a
            // backlog fetched at full speed); once the quota would make it wait, the pages in
            // hand are committed now instead of being held through the wait.
            if !pages.is_empty() && self.pacer.wait_for_slot() > HOLD_PAGES_FOR {
                break;
            }
            if held >= TXN_PAGE_BYTES {
                break;
            }
            // A parent page is committed right after its children, one at a time.
            if !pages.is_empty() && tree.is_some() {
                break;
            }
            let values = Values::at_page(
                &next.page,
                self.stream.page_size,
                since_value.clone(),
                until.clone(),
            );
            let (url, shape) = self.shaped(&self.stream, &next.page, &values, &filters)?;
            if let Some(export) = &self.stream.export {
                // The request asks for an export; its files are the pages (`super::export`).
                return self.export_step(next, export, &url, &shape, producer).await;
            }
            let (resp, body) = self.get_parsed(&url, &shape, producer).await?;
            let (recs, after) = page_of(&self.stream, &next.page, &resp, &body);
            let count = recs.map_or(0, Vec::len);
            self.saw_records(recs, &mut next);
            if let (Some(t), Some(recs)) = (tree.as_mut(), recs)
                && !resp.skipped
            {
                self.descend(t, &self.stream, recs, producer).await?;
                next.stamp = next.stamp.max(t.stamp);
            }
            let after = match after {
                Ok(a) => a,
                Err(e) => {
                    // The page cannot be followed: keep it in the DLQ (nothing is dropped
                    // silently) and pause the stream with the reason.
                    let kind = match e {
                        paginate::PaginateError::NoLastId(_) => "missing_key",
                        _ => "bad_pagination",
                    };
                    tracing::warn!(source = %self.source.name, stream = %self.stream.name, url = %resp.url, error = %e, "cannot paginate past this page: kept in the DLQ, stream paused");
                    self.dead_letter(
                        producer,
                        &resp,
                        kind,
                        format!("page from {}: {e}", resp.url),
                    )
                    .await?;
                    return Err(BatchError::Http(HttpError::Client {
                        url: resp.url.clone(),
                        status: resp.status,
                        body: format!("{e}; the page is kept in the DLQ"),
                    }));
                }
            };
            let prints = match recs {
                Some(recs) if self.stream.skip_unchanged => Unchanged::prints(
                    recs,
                    self.stream.primary_key.first(),
                    self.stream
                        .incremental
                        .as_ref()
                        .map(|i| (i.field.as_str(), i.field_format())),
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                ),
                _ => None,
            };
            // A full sync that detects deletes must land every key it sees.
            let may_skip = !(cur.mode == Mode::Full && self.stream.detect_deletes);
            let skip = resp.skipped
                || (may_skip && prints.as_deref().is_some_and(|p| unchanged.all_seen(p)));
            if resp.skipped {
                tracing::warn!(source = %self.source.name, stream = %self.stream.name, url = %resp.url, status = resp.status, "an on_status rule skips this response: nothing landed, going on as after an empty page");
                metrics::counter!(metric::FETCH_SKIPPED_PAGES, "source" => self.source.name.clone(), "stream" => self.stream.name.clone(), "status" => resp.status.to_string())
                    .increment(1);
            } else if skip {
                tracing::debug!(source = %self.source.name, stream = %self.stream.name, url = %resp.url, records = count, "page unchanged since this process landed it: not landed again");
                metrics::counter!(metric::FETCH_UNCHANGED_PAGES, "source" => self.source.name.clone(), "stream" => self.stream.name.clone())
                    .increment(1);
            } else {
                let seq = next.pages;
                next.stamp = next_stamp(next.stamp, time::OffsetDateTime::now_utc());
                if let Some(t) = tree.as_mut() {
                    t.stamp = next.stamp;
                }
                let mut landed = self
                    .land(&resp, next.place(), &after, seq, count as u64)
                    .await?;
                landed.prints = prints.unwrap_or_default();
                held += landed.value.len();
                pages.push(landed);
            }
            // The counts are of what landed: `pages` is the next page's `intake.seq`.
            next.passed(after, (!skip).then_some(count as u64));
        }
        next.finish_if_done(time::OffsetDateTime::now_utc());
        next.updated_at = headers::now_rfc3339();
        Ok((pages, next))
    }

    /// The URL and shape of a request of `stream` (this worker's, or a child's) at `at`; a
    /// request that cannot be built is refused like a client error.
    pub(super) fn shaped(
        &self,
        stream: &StreamConfig,
        at: &PageCursor,
        values: &Values,
        filters: &[(&str, &str)],
    ) -> Result<(url::Url, Shape), BatchError> {
        let base = self.source.base_url.as_deref().unwrap_or_default();
        let refused = |why: String| {
            BatchError::Http(HttpError::Client {
                url: base.to_owned(),
                status: 0,
                body: why,
            })
        };
        let url = paginate::request_url(base, stream, at, values, filters)
            .map_err(|e| refused(e.to_string()))?;
        let shape =
            request::shape(&self.source, stream, values).map_err(|e| refused(e.to_string()))?;
        Ok((url, shape))
    }

    /// Notes the incremental-field values of a page's records in the sync's high-water mark.
    pub(super) fn saw_records(&self, recs: Option<&Vec<Value>>, next: &mut CursorState) {
        if let (Some(inc), Some(recs)) = (&self.stream.incremental, recs) {
            for r in recs {
                if let Some(t) = r
                    .pointer(&inc.field)
                    .and_then(|v| inc.field_format().parse_json(v))
                {
                    next.saw(t);
                }
            }
        }
    }

    /// GETs a page and parses it. A body that is not JSON is kept in the DLQ (stage `fetch`,
    /// kind `malformed_json`, or `not_utf8`) and the request is repeated a few times before
    /// the stream pauses.
    pub(super) async fn get_parsed(
        &self,
        url: &url::Url,
        shape: &Shape,
        producer: &TxnProducer,
    ) -> Result<(Response, Value), BatchError> {
        let mut bad = 0;
        loop {
            let resp = self
                .http
                .request(url, shape, &self.pacer)
                .await
                .map_err(|e| match e {
                    // A newer owner took the token: stop, as when a stream's writer is fenced.
                    HttpError::Auth {
                        source: super::oauth::AuthError::Fenced(detail),
                        ..
                    } => BatchError::Fatal(FetchError::Fenced {
                        stream: super::cursor::stream_key(&self.source.name, &self.stream.name),
                        detail: format!("oauth2 token `{detail}` taken over"),
                    }),
                    e => BatchError::Http(e),
                })?;
            if resp.skipped {
                return Ok((resp, Value::Null));
            }
            match parse_page(self.stream.format, &resp.body) {
                Ok(v) => {
                    if let Some(why) = paginate::graphql_errors(&self.stream, &v) {
                        return Err(BatchError::Http(HttpError::Client {
                            url: resp.url.clone(),
                            status: resp.status,
                            body: why,
                        }));
                    }
                    return Ok((resp, v));
                }
                Err(e) => {
                    bad += 1;
                    let content_type = resp.headers.get(reqwest::header::CONTENT_TYPE).map_or_else(
                        || "none".to_owned(),
                        |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    );
                    let (kind, detail) = match std::str::from_utf8(&resp.body) {
                        _ if self.stream.format != crate::config::Format::Json => (
                            "not_a_page",
                            format!(
                                "page from {} (content-type {content_type}, format {}): {e}",
                                resp.url,
                                self.stream.format.as_str()
                            ),
                        ),
                        Err(u) => (
                            "not_utf8",
                            format!(
                                "page from {} (content-type {content_type}) is not UTF-8: invalid byte at offset {}",
                                resp.url,
                                u.valid_up_to()
                            ),
                        ),
                        Ok(_) => (
                            "malformed_json",
                            format!(
                                "page from {} (content-type {content_type}) is not valid JSON: {e}",
                                resp.url
                            ),
                        ),
                    };
                    tracing::warn!(source = %self.source.name, stream = %self.stream.name, url = %resp.url, error = %e, bytes = resp.body.len(), content_type, format = self.stream.format.as_str(), "page cannot be read: kept in the DLQ, request repeated");
                    self.dead_letter(producer, &resp, kind, detail).await?;
                    if bad >= 3 {
                        return Err(BatchError::Http(HttpError::Client {
                            url: resp.url,
                            status: resp.status,
                            body: match self.stream.format {
                                crate::config::Format::Json => {
                                    format!("the page is not valid JSON ({e}); kept in the DLQ")
                                }
                                other => format!(
                                    "the page cannot be read as {} ({e}); kept in the DLQ",
                                    other.as_str()
                                ),
                            },
                        }));
                    }
                }
            }
        }
    }
}

pub(super) enum BatchError {
    Http(HttpError),
    /// The blob store refused an oversize page (a full disk, a store that is away): nothing of
    /// the batch was landed; the stream pauses and fetches it again.
    Blob(crate::blob::BlobError),
    Fatal(FetchError),
}

/// Turns a stream's progress spinner (records read) into a bar over `span` seconds of the
/// stream's history, with an ETA, once the sync knows how far through time it is.
pub(in crate::fetch) fn time_bar(pb: &indicatif::ProgressBar, span: u64) {
    if pb.length().is_none() {
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{elapsed}] {bar:24} {percent:>3}% of its time span, eta {eta}",
            )
            .expect("valid template"),
        );
    }
    if pb.length() != Some(span) {
        pb.set_length(span);
    }
}

/// A page as JSON, for pagination, cursors and skipping: the body itself, or for JSON Lines and
/// CSV the array of its readable records (cells by their look; validate types them by the
/// schema and dead-letters the unreadable lines, which land with the page).
fn parse_page(format: crate::config::Format, body: &[u8]) -> Result<Value, String> {
    match format {
        crate::config::Format::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
        other => {
            let rows =
                crate::validate::split::normalize(other, body, &crate::validate::split::ByLook)
                    .map_err(|e| e.to_string())?;
            serde_json::from_slice(&rows.page).map_err(|e| e.to_string())
        }
    }
}

/// A page's records (at the stream's `records`) and where the next page is.
pub(super) fn page_of<'a>(
    stream: &StreamConfig,
    at: &PageCursor,
    resp: &Response,
    body: &'a Value,
) -> (
    Option<&'a Vec<Value>>,
    Result<PageCursor, paginate::PaginateError>,
) {
    let recs = body
        .pointer(stream.records_pointer())
        .and_then(Value::as_array);
    let last_id = recs
        .and_then(|r| r.last())
        .and_then(|r| r.pointer(stream.primary_key.first()))
        .map(key_string);
    let link = resp
        .headers
        .get(reqwest::header::LINK)
        .and_then(|v| v.to_str().ok());
    let after = paginate::next(
        stream,
        at,
        &PageFacts {
            body: Some(body),
            link,
            records: recs.map_or(0, Vec::len),
            last_id,
        },
    );
    (recs, after)
}

pub(super) fn key_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// The longest wait for the quota's next slot a transaction holds its pages through; a
/// longer one commits them first (their latency is the wait, a commit is a few ms).
const HOLD_PAGES_FOR: Duration = Duration::from_millis(5);

/// A transaction takes no further page once the pages in hand hold this many bytes (whatever
/// `pages_per_transaction` allows): each page is held by fetch and again by the producer
/// until its transaction commits, so this bounds a stream's share of fetch's memory.
/// `scripts/bench fetch` (3 streams, 10 pages of ~500 KiB a transaction): peak RSS 84 -> 70
/// MiB, and 61-64 MiB once each page is freed as the producer takes its copy
/// ([`StreamWorker::commit`]).
pub(crate) const TXN_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// [`kafka::retry::retrying_blocking`](crate::kafka::retry::retrying_blocking), its error as
/// fetch's: a fatal one (fenced) is [`FetchError::Fenced`].
pub(crate) async fn retry_blocking<F, T>(what: &str, f: F) -> Result<T, FetchError>
where
    F: Fn() -> rdkafka::error::KafkaResult<T> + Clone + Send + 'static,
    T: Send + 'static,
{
    crate::kafka::retry::retrying_blocking(what, f)
        .await
        .map_err(|e| fetch_error(what, e))
}

/// A Kafka error that retrying could not get past, as fetch's error.
fn fetch_error(what: &str, e: rdkafka::error::KafkaError) -> FetchError {
    if classify(&e) == ErrorClass::Fatal {
        FetchError::Fenced {
            stream: what.to_owned(),
            detail: e.to_string(),
        }
    } else {
        FetchError::Kafka(e)
    }
}
